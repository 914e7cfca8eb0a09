// tradesim login page: trades a username and password for an access token (POST /api/v1/auth/token) and keeps
// it in sessionStorage (this tab only, gone when the tab closes); the trading screen sends it as a bearer token.
"use strict";
(function () {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body = { username: form.username.value.trim(), password: form.password.value };
    let res;
    try {
      res = await fetch("/api/v1/auth/token", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
    } catch (e) {
      error.textContent = "cannot reach the server";
      return;
    }
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      error.textContent = data.message || ("sign-in failed (" + res.status + ")");
      return;
    }
    sessionStorage.setItem("tradesim.token", data.access_token);
    const next = new URLSearchParams(location.search).get("next");
    location.assign(next && next.startsWith("/") && !next.startsWith("//") ? next : "/");
  });
})();

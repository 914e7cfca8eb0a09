// tradesim trading screen: bearer auth for htmx and fetch, order entry and cancels through the REST API,
// the trade tape and candle chart (WebSocket /ws when the server has it, REST polling otherwise), algos.
"use strict";
(function () {
  const TOKEN_KEY = "tradesim.token";
  const token = sessionStorage.getItem(TOKEN_KEY);
  const claims = decodeClaims(token);
  if (!token || !claims || claims.exp * 1000 <= Date.now()) {
    signOut();
    return;
  }
  const screen = document.querySelector(".screen");
  const symbol = screen.dataset.symbol;
  const info = JSON.parse(screen.dataset.info || "{}")[symbol] || { tick: "0.01", lot: 1 };
  const $ = (sel) => document.querySelector(sel);
  $("#who").textContent = claims.sub;
  $("#role").textContent = claims.role + " · " + claims.account;

  function decodeClaims(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part));
    } catch (e) {
      return null;
    }
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
  }

  // --- auth for htmx fragments and for fetch -------------------------------------------------------------
  document.body.addEventListener("htmx:configRequest", (ev) => {
    ev.detail.headers["Authorization"] = "Bearer " + token;
  });
  document.body.addEventListener("htmx:responseError", (ev) => {
    if (ev.detail.xhr.status === 401) signOut();
  });

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (res.status === 401) signOut();
    const data = await res.json().catch(() => ({}));
    return { ok: res.ok, status: res.status, data };
  }

  function refresh() {
    for (const id of ["#book", "#orders", "#positions"]) htmx.trigger(id, "refresh");
  }

  // Refreshes asked for by pushed events, at most one per panel per 250 ms (the polls stay as the fallback).
  const pending = new Set();
  let pendingTimer = null;
  function soon(...ids) {
    ids.forEach((id) => pending.add(id));
    if (pendingTimer) return;
    pendingTimer = setTimeout(() => {
      pendingTimer = null;
      pending.forEach((id) => htmx.trigger(id, "refresh"));
      pending.clear();
    }, 250);
  }

  function say(sel, text, ok) {
    const el = $(sel);
    el.textContent = text;
    el.className = "msg small " + (ok ? "ok" : "bad");
  }

  $("#logout").addEventListener("click", signOut);
  $("#symbol").addEventListener("change", (ev) => location.assign("/?symbol=" + encodeURIComponent(ev.target.value)));

  // Cancel buttons: one listener on the page, since the polls replace the rows (and their buttons) at any time.
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-cancel]");
    if (!button) return;
    const id = button.dataset.cancel;
    button.disabled = true;
    try {
      const { ok, data } = await api("DELETE", "/api/v1/orders/" + encodeURIComponent(id));
      say("#entry-msg", ok ? `canceled #${id}` : `cancel #${id} failed: ${data.message || data.error}`, ok);
    } catch (e) {
      say("#entry-msg", "cannot reach the server", false);
    }
    refresh();
  });

  // --- my orders: open / all ----------------------------------------------------------------------------
  document.querySelectorAll("input[name=show]").forEach((radio) => radio.addEventListener("change", () => {
    $("#orders").setAttribute("hx-get", "/ui/orders?symbol=" + encodeURIComponent(symbol) + "&show=" + radio.value);
    htmx.process($("#orders"));
    htmx.trigger("#orders", "refresh");
  }));

  // --- order entry ---------------------------------------------------------------------------------------
  const form = $("#order-form");
  function syncEntry() {
    const side = form.side.value;
    const market = form.type.value === "market";
    form.price.disabled = market;
    const button = $("#submit-order");
    button.className = "primary " + side;
    const qty = form.qty.value || "0";
    button.textContent = (side === "buy" ? "Buy " : "Sell ") + qty + " " + symbol +
      (market ? " at market" : (form.price.value ? " @ " + form.price.value : ""));
  }
  form.addEventListener("input", syncEntry);
  form.addEventListener("change", syncEntry);
  syncEntry();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const order = {
      symbol, side: form.side.value, type: form.type.value, tif: form.tif.value,
      qty: parseInt(form.qty.value, 10),
      client_order_id: "ui-" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6),
    };
    if (order.type === "limit") {
      if (!form.price.value.trim()) return say("#entry-msg", "a limit order needs a price", false);
      order.price = form.price.value.trim();
    }
    const button = $("#submit-order");
    button.disabled = true;
    try {
      const { ok, status, data } = await api("POST", "/api/v1/orders", order);
      if (ok) {
        say("#entry-msg", `#${data.order_id} ${data.status.replace("_", " ")} · filled ${data.filled_qty}/${order.qty}`, true);
      } else {
        say("#entry-msg", `${data.error || status}: ${data.message || "refused"}`, false);
      }
    } catch (e) {
      say("#entry-msg", "cannot reach the server", false);
    } finally {
      button.disabled = false;
      refresh();
    }
  });

  // Clicking a ladder level takes its price: an ask to buy at, a bid to sell at.
  $("#book").addEventListener("click", (ev) => {
    const rung = ev.target.closest(".rung[data-price]");
    if (!rung) return;
    form.price.value = rung.dataset.price;
    form.type.value = "limit";
    form.side.value = rung.dataset.side === "sell" ? "buy" : "sell";
    syncEntry();
  });

  // --- chart ---------------------------------------------------------------------------------------------
  const BAR = 60;  // seconds per candle
  const tzShift = -new Date().getTimezoneOffset() * 60;  // lightweight-charts draws UTC: shift to local time
  const chartEl = $("#chart");
  const chart = LightweightCharts.createChart(chartEl, {
    autoSize: true,
    layout: { background: { color: "#12161d" }, textColor: "#8b949e", fontFamily: "ui-monospace, monospace", fontSize: 11 },
    grid: { vertLines: { color: "#1a2029" }, horzLines: { color: "#1a2029" } },
    rightPriceScale: { borderColor: "#1f2630" },
    timeScale: { borderColor: "#1f2630", timeVisible: true, secondsVisible: false },
    crosshair: { mode: LightweightCharts.CrosshairMode.Normal },
  });
  const decimals = (info.tick.split(".")[1] || "").length;
  const candles = chart.addCandlestickSeries({
    upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    priceFormat: { type: "price", precision: decimals, minMove: parseFloat(info.tick) },
  });
  const volume = chart.addHistogramSeries({ priceFormat: { type: "volume" }, priceScaleId: "vol" });
  chart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
  let lastBar = null;

  function candleTime(tsNs) {
    return Math.floor(tsNs / 1e9 / BAR) * BAR + tzShift;
  }

  function onTradeForChart(t) {
    const time = candleTime(t.ts);
    const price = parseFloat(t.price);
    if (lastBar && time < lastBar.time) return;  // older than the candle in progress
    if (!lastBar || time > lastBar.time) {
      lastBar = { time, open: price, high: price, low: price, close: price, volume: 0 };
    } else {
      lastBar.high = Math.max(lastBar.high, price);
      lastBar.low = Math.min(lastBar.low, price);
      lastBar.close = price;
    }
    lastBar.volume += t.qty;
    candles.update(lastBar);
    volume.update({ time, value: lastBar.volume, color: lastBar.close >= lastBar.open ? "#26a69a55" : "#ef535055" });
  }

  function barTime(b) {
    const ts = b.ts ?? b.start_ts ?? b.start ?? b.time ?? b.t;
    return ts > 1e12 ? Math.floor(ts / 1e9) : ts;
  }

  async function loadBars() {
    let res;
    try {
      res = await api("GET", `/api/v1/bars/${encodeURIComponent(symbol)}?interval=${BAR}&limit=500`);
    } catch (e) {
      return;
    }
    const bars = res.ok ? (res.data.bars || []) : [];
    if (!res.ok) $("#chart-note").textContent = "(no bar history: candles from live trades)";
    const rows = bars.map((b) => ({
      time: Math.floor(barTime(b) / BAR) * BAR + tzShift,
      open: +b.open, high: +b.high, low: +b.low, close: +b.close, volume: +(b.volume || 0),
    })).filter((b) => Number.isFinite(b.time) && Number.isFinite(b.close)).sort((a, b) => a.time - b.time);
    const merged = [];
    for (const r of rows) {
      if (merged.length && merged[merged.length - 1].time === r.time) merged[merged.length - 1] = r;
      else merged.push(r);
    }
    if (merged.length) {
      candles.setData(merged);
      volume.setData(merged.map((b) => ({ time: b.time, value: b.volume,
        color: b.close >= b.open ? "#26a69a55" : "#ef535055" })));
      if (!lastBar || merged[merged.length - 1].time >= lastBar.time) lastBar = { ...merged[merged.length - 1] };
    }
  }

  // --- trade tape ----------------------------------------------------------------------------------------
  const tape = $("#tape");
  const seen = new Set();
  const TAPE_ROWS = 80;
  function clock(tsNs) {
    return new Date(tsNs / 1e6).toLocaleTimeString([], { hour12: false });
  }
  function onTrades(trades, fresh) {  // trades oldest first
    let added = false;
    for (const t of trades) {
      if (seen.has(t.trade_id)) continue;
      seen.add(t.trade_id);
      if (!added && tape.querySelector("p")) tape.innerHTML = "";
      added = true;
      const row = document.createElement("div");
      row.className = "print" + (fresh ? " fresh" : "");
      const cls = t.aggressor === "sell" ? "sell" : "buy";
      row.innerHTML = `<span class="t"></span><span class="${cls}"></span><span></span>`;
      row.children[0].textContent = clock(t.ts);
      row.children[1].textContent = t.price;
      row.children[2].textContent = t.qty;
      tape.prepend(row);
      onTradeForChart(t);
    }
    while (tape.children.length > TAPE_ROWS) tape.lastElementChild.remove();
  }

  let polling = null;
  function pollTrades() {
    if (polling) return;
    $("#feed").textContent = "poll";
    $("#feed").className = "feed";
    const tick = async () => {
      try {
        const res = await api("GET", `/api/v1/trades/${encodeURIComponent(symbol)}?limit=50`);
        if (res.ok) {
          const list = (res.data.trades || []).slice().sort((a, b) => a.seq - b.seq || a.ts - b.ts);
          onTrades(list, true);
        }
      } catch (e) { /* the next tick retries */ }
    };
    tick();
    polling = setInterval(tick, 1000);
  }

  // Live trades over the WebSocket when the server has /ws; polling otherwise (and after it drops).
  function streamTrades() {
    let ws;
    try {
      ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    } catch (e) {
      return pollTrades();
    }
    let live = false;
    ws.onopen = () => {
      ws.send(JSON.stringify({ op: "auth", token }));
      ws.send(JSON.stringify({ op: "subscribe", channel: "trades", symbol }));
      ws.send(JSON.stringify({ op: "subscribe", channel: "orders" }));
      ws.send(JSON.stringify({ op: "subscribe", channel: "positions" }));
    };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.channel === "orders" && msg.type !== "subscribed") return soon("#orders", "#book", "#positions");
      if (msg.channel === "positions" && msg.type !== "subscribed") return soon("#positions");
      if (msg.channel !== "trades") return;
      if (msg.type === "snapshot") {
        live = true;
        clearInterval(polling);
        polling = null;
        $("#feed").textContent = "live";
        $("#feed").className = "feed live";
        onTrades(msg.trades || [], false);
      } else if (msg.type === "trade") {
        onTrades([msg], true);
        soon("#book");
      }
    };
    ws.onclose = (ev) => {
      // 4401: the token expired (or the key was revoked): the REST calls would fail too, so log in again
      if (ev.code === 4401 || claims.exp * 1000 <= Date.now()) return signOut();
      if (live) setTimeout(streamTrades, 2000);  // dropped: resubscribe (the snapshot fills the gap)
      pollTrades();
    };
  }

  // --- algos ---------------------------------------------------------------------------------------------
  async function loadAlgos() {
    let res;
    try {
      res = await api("GET", "/api/v1/algos?limit=30");
    } catch (e) {
      return;
    }
    const box = $("#algos");
    if (!res.ok) {
      box.innerHTML = '<p class="muted pad">algos are not available on this server</p>';
      return false;
    }
    const list = res.data.algos || [];
    box.innerHTML = list.length ? "" : '<p class="muted pad">no algos</p>';
    for (const a of list) {
      const row = document.createElement("div");
      row.className = "algo";
      row.dataset.algoId = a.algo_id;
      row.innerHTML = "<span></span><span></span><span></span><span></span>";
      row.children[0].textContent = `${a.algo.toUpperCase()} ${a.side} ${a.qty}`;
      row.children[0].title = `${a.algo_id} · ${a.symbol}`;
      row.children[1].textContent = `${a.filled_qty}/${a.qty}`;
      row.children[1].className = "r";
      row.children[1].title = a.avg_price ? `avg ${a.avg_price}` : "";
      row.children[2].textContent = a.state;
      row.children[2].className = "status s-" + a.state;
      if (a.state === "running" || a.state === "paused") {
        const stop = document.createElement("button");
        stop.className = "cancel";
        stop.textContent = "cancel";
        stop.addEventListener("click", async () => {
          const r = await api("DELETE", "/api/v1/algos/" + encodeURIComponent(a.algo_id));
          say("#algo-msg", r.ok ? `canceled ${a.algo_id}` : `${r.data.error}: ${r.data.message}`, r.ok);
          loadAlgos();
        });
        row.children[3].appendChild(stop);
      }
      box.appendChild(row);
    }
    return true;
  }
  $("#algo-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const body = {
      algo: "twap", symbol, side: f.side.value, qty: parseInt(f.qty.value, 10),
      params: { duration_ms: parseInt(f.minutes.value, 10) * 60000 },
    };
    try {
      const { ok, status, data } = await api("POST", "/api/v1/algos", body);
      say("#algo-msg", ok ? `TWAP ${data.algo_id} ${data.state}`
        : `${data.error || status}: ${data.message || "refused"}`, ok);
    } catch (e) {
      say("#algo-msg", "cannot reach the server", false);
    }
    loadAlgos();
  });

  loadBars().then(() => ("WebSocket" in window ? streamTrades() : pollTrades()));
  loadAlgos().then((available) => { if (available) setInterval(loadAlgos, 3000); });
})();

"""The Dockerfile and its build context, checked without a Docker daemon: a slim Python 3.11 base, a
non-root user, `tradesim` as the entrypoint, a health check on /healthz, no dev extras, a small context
(.dockerignore) -- and the package built from exactly that context is complete."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.support import ROOT, build_context, load_render
from tradesim.services.config import Settings

render = load_render()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        lines.append(pending)
        pending = ""
    assert not pending, "dangling line continuation"
    out = []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_every_stage_is_slim_python_311() -> None:
    bases = [args.split()[0] for word, args in instructions() if word == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases


def test_final_stage_runs_tradesim_as_a_non_root_user() -> None:
    stage = final_stage()
    words = [word for word, _ in stage]
    user = [args for word, args in stage if word == "USER"]
    assert len(user) == 1
    uid, _, gid = user[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), "a numeric uid lets runAsNonRoot verify it"
    assert words.index("USER") > max(i for i, w in enumerate(words) if w in ("RUN", "COPY")), \
        "nothing runs as root after USER"
    assert json.loads(dict(stage)["ENTRYPOINT"]) == ["tradesim"]
    objs = [d.obj for d in render.render_chart()]
    for deployment in (o for o in objs if o["kind"] == "Deployment"):
        security = deployment["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsUser"] == int(uid) and security["runAsNonRoot"] is True


def test_health_check_probes_healthz_on_the_configured_port() -> None:
    stage = dict(final_stage())
    check = stage["HEALTHCHECK"]
    assert "CMD" in check and "/healthz" in check and "TRADESIM_PORT" in check
    exposed = stage["EXPOSE"]
    env = dict(re.findall(r"(\w+)=(\S+)", stage["ENV"]))
    assert env["TRADESIM_PORT"] == exposed == "8000"


def test_image_environment_names_real_settings() -> None:
    env = dict(re.findall(r"(\w+)=(\S+)", dict(final_stage())["ENV"]))
    settings = {"TRADESIM_" + name.upper() for name in Settings.__struct_fields__}
    for name in env:
        if name.startswith("TRADESIM_"):
            assert name in settings | {"TRADESIM_LOG_FILE"}, f"{name} is read by nothing"


def test_package_is_installed_without_dev_extras() -> None:
    installs = [args for word, args in instructions() if word == "RUN" and "pip install" in args]
    assert installs, "the image installs the package"
    for args in installs:
        assert re.search(r"pip install \.(\s|$)", args), args
        assert "[" not in args and "requirements" not in args, args


def test_build_context_is_only_the_package() -> None:
    context = build_context()
    assert "pyproject.toml" in context and "README.md" in context
    tops = {path.split("/")[0] for path in context}
    assert tops == {"pyproject.toml", "README.md", "tradesim"}, tops
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc")]
    tracked = subprocess.run(["git", "ls-files", "tradesim"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    missing = [p for p in tracked if p not in context and (ROOT / p).is_file()]
    assert not missing, f"tracked package files left out of the image: {missing}"
    for word, args in instructions():
        if word == "COPY" and "--from" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert any(p == source or p.startswith(source.rstrip("/") + "/") for p in context), source


def test_the_context_builds_a_complete_package(tmp_path: Path) -> None:
    """What `pip install .` in the image builds, from the files the context sends: the package data the
    services and the UI load at run time and the `tradesim` entry point must all be in it."""
    context = tmp_path / "context"
    for rel in build_context():
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    wheels = tmp_path / "wheels"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(context)],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheels.glob("tradesim-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "tradesim/services/default.toml" in names
    assert any(n.startswith("tradesim/api/ui/templates/") and n.endswith(".html") for n in names)
    assert any(n.startswith("tradesim/api/ui/static/") for n in names)
    package_data = {p for p in build_context() if p.startswith("tradesim/") and not p.endswith(".py")}
    assert package_data <= names, f"files the context sends but the package leaves out: {package_data - names}"
    assert re.search(r"^tradesim = tradesim\.cli:main$", entry_points, re.M)

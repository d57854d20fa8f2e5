"""What a user gets from the package index: the wheel carries the license and the project
URLs, and the README (the package's page) renders and works away from the repository."""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "--target", "wheel", "--directory", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (found,) = out.glob("ilp_receiver-*.whl")
    return found


def test_the_wheel_ships_the_license_and_the_project_urls(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        shipped = z.read(license_name).decode("utf-8")
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(z.read(metadata_name).decode("utf-8"))
    assert shipped == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in shipped and "Version 2.0, January 2004" in shipped
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert urls == PYPROJECT["project"]["urls"]
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    # the package page is the README, as markdown, and it renders as PyPI renders it
    assert metadata["Description-Content-Type"] == "text/markdown"
    from readme_renderer.markdown import render

    description = metadata.get_payload()
    assert isinstance(description, str)
    html = render(description, variant="GFM")
    assert html is not None and "Get paid in five lines" in html


def test_the_readme_renders(tmp_path: Path) -> None:
    out = tmp_path / "readme.html"
    run = subprocess.run(
        [sys.executable, "-m", "readme_renderer", str(ROOT / "README.md"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    html = out.read_text(encoding="utf-8")
    assert re.search(r"<h2[^>]*>Install<", html), html[:2000]
    assert re.search(r'<pre lang="python"', html)


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    # the project's rule, and what .ci/run runs: the first two ```sh blocks, first of all
    blocks = re.findall(r"^```sh\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2, "exactly two ```sh blocks: .ci/run runs them"
    head = README.split("\n\n")
    assert head[0] == "# ilp-receiver"
    assert head[1].startswith("```sh\n") and "ilp-receiver demo --once" in head[1]
    assert head[2].startswith("```sh\n") and "python -m pytest" in head[2]
    for block in blocks:
        assert "-c constraints.txt" in block


def test_the_readme_links_work_off_the_repository() -> None:
    # on the package index a relative link leads nowhere: every link is absolute
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    assert targets
    home = PYPROJECT["project"]["urls"]["Source"]
    for target in targets:
        assert target.startswith(("https://", "http://", "#")), target
        if "/docs/" in target:
            assert target.startswith(f"{home}/blob/main/docs/"), target
            assert (ROOT / "docs" / target.rsplit("/", 1)[1]).is_file(), target


def test_the_readme_example_runs(tmp_path: Path) -> None:
    code = "\n".join(re.findall(r"^```python\n(.*?)^```$", README, re.MULTILINE | re.DOTALL))
    script = tmp_path / "example.py"
    # the example as written, then a look at what it built (no connector is dialled)
    script.write_text(
        code + "\nassert app.url_map.bind('x').match('/api/report')[0] == 'report'\n",
        encoding="utf-8",
    )
    # the settings the README puts in the environment (the code holds no credential)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILP_RECEIVER_")}
    env["ILP_RECEIVER_UPLINK"] = "btp+ws://shop:secret@127.0.0.1:7768"
    env["ILP_RECEIVER_SECRET_FILE"] = str(tmp_path / "receiver.secret")
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]

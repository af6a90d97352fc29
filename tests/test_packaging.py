"""What a user gets from `pip install`: the three distributions are built as a release
builds them (`python -m build`: an sdist, then a wheel from it), each wheel is installed
into a fresh venv without extras, and its README example runs there as written (with a
local deterministic model in place of the hosted one, so no network key is needed).

Also: every distribution carries the Apache-2.0 LICENSE and valid trove classifiers,
ships no tests it cannot run, and the `agentaudit` script installed without the `cli`
extra says in one line what to install instead of a traceback.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from trove_classifiers import classifiers as TROVE
from trove_classifiers import deprecated_classifiers as DEPRECATED

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = {
    "agentaudit": ROOT,
    "agentaudit-langchain": ROOT / "integrations" / "langchain",
    "agentaudit-llamaindex": ROOT / "integrations" / "llamaindex",
}
HINT = 'pip install "agentaudit[cli]"'


@dataclass(frozen=True)
class Built:
    """One project's built distributions."""

    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    out = tmp_path_factory.mktemp("dist")
    built: dict[str, Built] = {}
    for name, project in PROJECTS.items():
        target = out / name
        result = subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(target), str(project)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        [wheel] = target.glob("*.whl")
        [sdist] = target.glob("*.tar.gz")
        built[name] = Built(wheel, sdist)
    # One directory with every wheel, for --find-links.
    wheels = out / "wheels"
    wheels.mkdir()
    for b in built.values():
        shutil.copy(b.wheel, wheels)
    return built


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(zf.read(name))


class Venv:
    """A fresh virtual environment (with pip), and commands run in it from `cwd`."""

    def __init__(self, path: Path, cwd: Path) -> None:
        venv.create(path, with_pip=True, clear=True)
        self.bin = path / "bin"
        self.cwd = cwd
        cwd.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def pip_install(self, wheels_dir: Path, *requirements: str) -> None:
        self.run("python", "-m", "pip", "install", "--quiet", "--find-links", str(wheels_dir), *requirements)

    def installed(self) -> set[str]:
        listing = self.run("python", "-m", "pip", "list", "--format=freeze").stdout
        return {line.split("==")[0].lower() for line in listing.splitlines() if "==" in line}


def python_blocks(readme: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S)


def stored_runs(env: Venv) -> list[str]:
    """`name status steps tool_calls caller` of each run in the venv's ./agentaudit.db,
    read in that venv."""
    code = (
        "import agentaudit as aa\n"
        "s = aa.SQLiteStore('agentaudit.db', create=False)\n"
        "for r in s.list_runs(): print(r.name, r.status, r.steps, r.tool_calls, r.caller)\n"
    )
    return env.run("python", "-c", code).stdout.splitlines()


def assert_cli_hint(env: Venv, *command: str) -> None:
    result = env.run(*command, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and HINT in lines[0], result.stderr


# -- what is in the distributions -------------------------------------------------------


def test_every_distribution_carries_the_license_and_no_unrunnable_tests(
    dists: dict[str, Built],
) -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a notice
    for name, built in dists.items():
        with zipfile.ZipFile(built.wheel) as zf:
            [licensed] = [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            assert zf.read(licensed).decode() == license_text, name
            assert not [n for n in zf.namelist() if n.startswith("tests/")], name
        meta = wheel_metadata(built.wheel)
        assert meta["License-Expression"] == "Apache-2.0", name
        assert meta.get_all("License-File") == ["LICENSE"], name
        assert meta["Author"] == "agentaudit maintainers", name
        with tarfile.open(built.sdist) as tf:
            names = [m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name]
            top = built.sdist.name.removesuffix(".tar.gz")
            license_member = tf.extractfile(f"{top}/LICENSE")
            assert license_member is not None and license_member.read().decode() == license_text
        assert "README.md" in names and "pyproject.toml" in names, name
        # The tests need the repository (fixtures, conftest, docs): they stay there.
        assert not [n for n in names if n.startswith("tests")], (name, names)


def test_classifiers_are_valid_trove_classifiers(dists: dict[str, Built]) -> None:
    for name, built in dists.items():
        found = wheel_metadata(built.wheel).get_all("Classifier") or []
        assert found, name
        invalid = [c for c in found if c not in TROVE or c in DEPRECATED]
        assert not invalid, (name, invalid)


def test_readmes_have_no_links_that_break_on_pypi() -> None:
    for project in PROJECTS.values():
        text = (project / "README.md").read_text(encoding="utf-8")
        targets = re.findall(r"\]\(([^)]*)\)", text)
        relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
        assert not relative, (project, relative)
        assert "example.invalid" not in text
    core = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^pip install agentaudit\b", core, flags=re.M)
    assert "docs/" in core.split("## Documentation", 1)[1][:600]


def test_pyprojects_declare_the_license_files_and_no_placeholder_urls() -> None:
    for project in PROJECTS.values():
        assert (project / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
        text = (project / "pyproject.toml").read_text(encoding="utf-8")
        assert 'license-files = ["LICENSE"]' in text
        assert "example.invalid" not in text and "example.com" not in text


# -- a fresh venv per distribution, no extras ----------------------------------------------


def test_the_core_alone_runs_its_readme_example_and_the_command_says_what_to_install(
    dists: dict[str, Built], tmp_path: Path
) -> None:
    env = Venv(tmp_path / "venv", tmp_path / "work")
    wheels = dists["agentaudit"].wheel.parent.parent / "wheels"
    env.pip_install(wheels, str(dists["agentaudit"].wheel))
    assert not {"click", "rich"} & env.installed()  # the core is standard library only

    [example] = [
        block
        for block in re.findall(
            r"<!-- core-example.*?-->\n```python\n(.*?)```",
            (ROOT / "README.md").read_text(encoding="utf-8"),
            flags=re.S,
        )
    ]
    (env.cwd / "example.py").write_text(example, encoding="utf-8")
    out = env.run("python", "example.py").stdout
    assert out.splitlines() == ["research-agent succeeded 1 1 True"]

    # The script comes with the core; without the cli extra it says what to install.
    assert_cli_hint(env, "agentaudit")
    assert_cli_hint(env, "agentaudit", "runs")
    assert_cli_hint(env, "python", "-m", "agentaudit", "runs")

    # What it says to install makes the command work.
    env.pip_install(wheels, f"{dists['agentaudit'].wheel}[cli]")
    runs = env.run("agentaudit", "--db", "agentaudit.db", "runs", "--json").stdout
    assert "research-agent" in runs and "succeeded" in runs
    assert "Usage" in env.run("python", "-m", "agentaudit", "--help").stdout


def test_the_langchain_wheel_runs_its_readme_example(dists: dict[str, Built], tmp_path: Path) -> None:
    env = Venv(tmp_path / "venv", tmp_path / "work")
    wheels = dists["agentaudit"].wheel.parent.parent / "wheels"
    # The README's install line, from the built wheels (given by path, so that a
    # same-named release on an index can never stand in for them).
    env.pip_install(wheels, str(dists["agentaudit-langchain"].wheel), str(dists["agentaudit"].wheel))
    installed = env.installed()
    assert {"langchain", "langchain-core", "agentaudit"} <= installed
    assert "langchain-openai" not in installed  # the model below replaces it

    [example] = python_blocks(PROJECTS["agentaudit-langchain"] / "README.md")
    hosted = '"openai:gpt-4o-mini"'
    assert example.count(hosted) == 1
    script = "from packaging_models import langchain_model\n" + example.replace(hosted, "langchain_model()")
    (env.cwd / "example.py").write_text(script, encoding="utf-8")
    shutil.copy(ROOT / "tests" / "packaging_models.py", env.cwd)
    env.run("python", "example.py")
    assert stored_runs(env) == ["forecaster succeeded 2 1 user:42"]
    assert_cli_hint(env, "agentaudit", "runs")


def test_the_llamaindex_wheel_runs_its_readme_example(dists: dict[str, Built], tmp_path: Path) -> None:
    env = Venv(tmp_path / "venv", tmp_path / "work")
    wheels = dists["agentaudit"].wheel.parent.parent / "wheels"
    readme = (PROJECTS["agentaudit-llamaindex"] / "README.md").read_text(encoding="utf-8")
    # The README names the LLM package its example imports; install what it says.
    assert "pip install llama-index-llms-openai" in readme
    env.pip_install(
        wheels,
        str(dists["agentaudit-llamaindex"].wheel),
        str(dists["agentaudit"].wheel),
        "llama-index-llms-openai",
    )

    [example] = python_blocks(PROJECTS["agentaudit-llamaindex"] / "README.md")
    hosted = 'OpenAI(model="gpt-4o-mini")'
    assert example.count(hosted) == 1
    script = "from packaging_models import llamaindex_llm\n" + example.replace(hosted, "llamaindex_llm()")
    (env.cwd / "example.py").write_text(script, encoding="utf-8")
    shutil.copy(ROOT / "tests" / "packaging_models.py", env.cwd)
    out = env.run("python", "example.py").stdout
    assert out.splitlines() == ["It is sunny in Paris."]
    assert stored_runs(env) == ["forecaster succeeded 2 1 user:42"]


# -- the entry point, in the development venv -----------------------------------------------


def test_python_m_agentaudit_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentaudit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: agentaudit")


def test_a_missing_cli_library_is_one_line_not_a_traceback() -> None:
    for library in ("click", "rich"):
        # None in sys.modules makes `import click` fail as if it were not installed.
        code = f"import sys; sys.modules[{library!r}] = None; from agentaudit.__main__ import main; main()"
        result = subprocess.run(
            [sys.executable, "-c", code, "runs"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1
        assert result.stderr.strip() == (
            'agentaudit: the command needs the cli extra: pip install "agentaudit[cli]"'
        )

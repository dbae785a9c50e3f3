"""The worker image (``Dockerfile``, ``.dockerignore``, ``docker/``), without a container engine.

No container engine runs on the development machines or in CI, so no test here builds the
image. They check instead:

- the Dockerfile's facts: slim Python bases that satisfy ``requires-python``, the wheel
  built with ``pip wheel --no-deps``, a non-root ``USER`` before ``ENTRYPOINT
  ["pixelfleet"]``, ``CMD ["worker"]`` as the aws-batch executor expects, and the extras
  a worker needs, derived from pyproject.toml so the two cannot drift;
- the build context that ``.dockerignore`` lets through (Docker's own matching rules,
  applied to this checkout): what the wheel is built from, and never ``.venv`` or ``.git``;
- ``docker/requirements.py``, which lists the dependencies the image installs first;
- (slow) the Dockerfile's own ``COPY`` and ``RUN`` steps, run for real in a temporary
  folder: the build stage's wheel needs nothing beyond the requirements it lists; and,
  only with ``PIXELFLEET_IMAGE_TEST=1`` (it installs every dependency from the package
  index: one to two minutes), the whole image, with a fresh venv standing in for its
  ``/opt/pixelfleet``, whose entrypoint and command then answer ``--help`` and print a
  job definition.
"""

from __future__ import annotations

import email.parser
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from pixelfleet.cli.main import cli
from pixelfleet.executors.batch import job_definition
from pixelfleet.executors.launchers import worker_arguments

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT_TOML = tomllib.loads((REPO / "pyproject.toml").read_text())
PYPROJECT = PYPROJECT_TOML["project"]
EXTRAS = PYPROJECT["optional-dependencies"]

#: Extras the image leaves out, and why. Every other extra of pyproject.toml (but the
#: ``all`` and ``dev`` bundles) must be in the image's EXTRAS: a new extra fails this test
#: until someone decides whether workers need it.
NOT_IN_IMAGE = {
    "dask": "Dask workers run their own image (dask.distributed's)",
    "server": "the web UI and STAC API run elsewhere",
    "parquet": "Parquet inventories are read by the driver that plans, not by workers",
    "ml": "a build argument (ML=1): torch comes first, from the CPU index",
}
BUNDLES = {"all", "dev"}

#: A module each extra brings, imported in the installed image (slow test).
EXTRA_MODULES = {
    "s3": ["obstore", "botocore"],
    "aws": ["boto3"],
    "postgres": ["psycopg"],
    "catalog": ["pystac", "rio_stac", "antimeridian"],
    "pgstac": ["pypgstac"],
    "composite": ["matplotlib"],
    "events": ["pika", "watchfiles"],
}

#: How the build stage makes the wheel (checked to be in the Dockerfile verbatim).
BUILD_WHEEL = "pip wheel --no-deps --wheel-dir dist ."


# -- reading a Dockerfile ------------------------------------------------------------------
@dataclass
class Instruction:
    """One Dockerfile instruction, continuation lines joined, comments dropped."""

    keyword: str
    args: str
    line: int

    def words(self) -> list[str]:
        """The arguments split as a shell would (ENV, ARG, COPY, LABEL)."""
        return shlex.split(self.args)

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT, CMD or RUN."""
        assert self.args.startswith("["), f"line {self.line}: {self.keyword} is not in exec form"
        value = json.loads(self.args)
        assert isinstance(value, list)
        return [str(v) for v in value]


@dataclass
class Stage:
    """A ``FROM`` and the instructions up to the next one."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """This stage's instructions with ``keyword``, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def index(self, instruction: Instruction) -> int:
        """Where ``instruction`` stands in the stage."""
        return self.instructions.index(instruction)

    def run_with(self, text: str) -> Instruction:
        """The one RUN whose shell text contains ``text``."""
        found = [i for i in self.all("RUN") if text in i.args]
        assert len(found) == 1, f"{len(found)} RUN lines contain {text!r} in stage {self.name}"
        return found[0]


@dataclass
class Dockerfile:
    """The global ARGs (before the first FROM) and the stages."""

    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        """The stage the image is made of."""
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        """A stage by its ``AS`` name."""
        (found,) = [s for s in self.stages if s.name == name]
        return found

    def arg_default(self, stage: Stage, name: str) -> str | None:
        """The value of ``ARG name`` in ``stage`` when no --build-arg is given."""
        value = None
        for arg in stage.all("ARG"):
            key, sep, default = arg.args.partition("=")
            if key.strip() == name:
                value = default if sep else self.global_args.get(name)
        return value


def parse_dockerfile(text: str) -> Dockerfile:
    """Split a Dockerfile into instructions, as the builder does (no heredocs)."""
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not buffer and not line):
            continue  # comments, parser directives, blank lines (also inside continuations)
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append((start, buffer + line))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a continuation line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), number)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {number}: only ARG may precede FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key.strip()] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def image_extras(dockerfile: Dockerfile) -> list[str]:
    value = dockerfile.arg_default(dockerfile.final, "EXTRAS") or dockerfile.arg_default(
        dockerfile.stage("build"), "EXTRAS"
    )
    assert value, "the Dockerfile has no default for ARG EXTRAS"
    return value.split(",")


# -- the Dockerfile's facts ----------------------------------------------------------------
def test_every_stage_starts_from_a_slim_python_the_project_supports(
    dockerfile: Dockerfile,
) -> None:
    assert len(dockerfile.stages) >= 2, "a build stage for the wheel, then the image"
    supported = SpecifierSet(PYPROJECT["requires-python"])
    for stage in dockerfile.stages:
        match = re.fullmatch(r"python:(\d+\.\d+)-slim(-[a-z]+)?", stage.base)
        assert match, f"{stage.base!r} is not an official slim Python image"
        assert f"{match[1]}.0" in supported, f"{stage.base} vs requires-python {supported}"
    assert dockerfile.final.base == "python:3.11-slim"


def test_the_build_stage_makes_the_wheel_after_listing_the_requirements(
    dockerfile: Dockerfile,
) -> None:
    build = dockerfile.stage("build")
    wheel = build.run_with(BUILD_WHEEL)
    requirements = build.run_with("requirements.py")
    copies = {i.words()[-2]: build.index(i) for i in build.all("COPY")}
    # Cache-friendly: the requirements are listed from pyproject.toml before the code is
    # copied in, so a change to src/ leaves them (and the dependency layer) cached.
    assert copies["pyproject.toml"] < build.index(requirements) < copies["src/"]
    assert copies["src/"] < build.index(wheel)
    # The final stage takes the wheel and the lists from the build stage only.
    froms = [i for i in dockerfile.final.all("COPY") if "--from=build" in i.args]
    assert {w for i in froms for w in i.words()[1:-1]} == {
        "/build/requirements.txt",
        "/build/extras.txt",
        "/build/dist/",
    }


def test_the_worker_runs_as_a_user_that_is_not_root(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    (entrypoint,) = final.all("ENTRYPOINT")
    users = final.all("USER")
    assert users, "the image would run as root"
    user = users[-1]
    assert final.index(user) < final.index(entrypoint)
    name, _, group = user.args.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0")
    # Numeric, so that "must run as non-root" checks (Kubernetes, ECS) can verify it...
    assert name.isdigit(), "USER should be numeric"
    # ...and created in the image with that id, with a home for caches (matplotlib's).
    created = final.run_with("useradd")
    assert f"--uid {name}" in created.args and "--create-home" in created.args
    assert final.index(created) < final.index(user)


def test_the_entrypoint_is_pixelfleet_and_the_command_is_what_batch_sends(
    dockerfile: Dockerfile,
) -> None:
    final = dockerfile.final
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    assert entrypoint.exec_form() == ["pixelfleet"]
    assert "pixelfleet" in PYPROJECT["scripts"]
    assert cmd.exec_form() == ["worker"]
    # The job definition's default command, and the one every array child is given,
    # are arguments of that entrypoint.
    definition = job_definition({}, "example.invalid/pixelfleet-worker:1")
    assert definition["containerProperties"]["command"] == cmd.exec_form()
    overrides = worker_arguments("run-1", "postgresql://pf@db/pixelfleet")
    assert overrides[0] == "worker"
    result = CliRunner().invoke(cli, [*overrides[:1], "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--ledger", "--run"):
        assert option in overrides and option in result.output


def test_the_image_has_the_extras_a_worker_needs(dockerfile: Dockerfile) -> None:
    extras = image_extras(dockerfile)
    assert len(extras) == len(set(extras))
    assert set(NOT_IN_IMAGE) | BUNDLES <= set(EXTRAS), "NOT_IN_IMAGE names an extra gone"
    wanted = set(EXTRAS) - BUNDLES - set(NOT_IN_IMAGE)
    assert set(extras) == wanted
    # `all` is what the README offers; a worker's extras are all in it.
    assert set(extras) <= set(Requirement(EXTRAS["all"][0]).extras)
    assert set(EXTRA_MODULES) == wanted


def test_the_ml_build_argument_installs_cpu_torch_first(dockerfile: Dockerfile) -> None:
    build, final = dockerfile.stage("build"), dockerfile.final
    assert dockerfile.arg_default(build, "ML") == "0"
    assert dockerfile.arg_default(final, "ML") == "0"
    adds_ml = build.run_with("requirements.py")
    assert 'if [ "$ML" = 1 ]; then extras="$extras,ml"; fi' in adds_ml.args
    # The same torch as the `ml` extra pins, so that pip keeps the CPU build.
    (torch,) = [r for r in map(Requirement, EXTRAS["ml"]) if r.name == "torch"]
    torch_run = final.run_with("torch==")
    assert f'pip install --index-url "$TORCH_INDEX_URL" torch{torch.specifier}' in torch_run.args
    assert "/cpu" in (dockerfile.arg_default(final, "TORCH_INDEX_URL") or "")
    assert final.index(torch_run) < final.index(final.run_with("requirements.txt"))


def test_the_environment_is_plain_and_holds_no_secrets(dockerfile: Dockerfile) -> None:
    env: dict[str, str] = {}
    for instruction in dockerfile.final.all("ENV"):
        for word in instruction.words():
            name, _, value = word.partition("=")
            env[name] = value
    assert env["PYTHONUNBUFFERED"] == "1"
    settings = (REPO / "src" / "pixelfleet" / "settings.py").read_text()
    for name in env:
        if name.startswith("PIXELFLEET_"):
            assert f'"{name}"' in settings, f"{name} is not a setting pixelfleet reads"
    names = (
        list(env)
        + [a.args.partition("=")[0] for s in dockerfile.stages for a in s.all("ARG")]
        + list(dockerfile.global_args)
    )
    for name in names:
        assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", name), (
            f"{name}: credentials come from the job role, never from the image"
        )


# -- docker/requirements.py ----------------------------------------------------------------
@pytest.fixture(scope="module")
def requirements_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docker_requirements", REPO / "docker" / "requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_are_the_dependencies_and_the_extras(
    dockerfile: Dockerfile, requirements_script: ModuleType
) -> None:
    extras = image_extras(dockerfile)
    lines = requirements_script.requirements(PYPROJECT, extras)
    assert lines[: len(PYPROJECT["dependencies"])] == PYPROJECT["dependencies"]
    assert len(lines) == len(set(lines))
    # The extras and those they name (pgstac names catalog), and nothing else.
    named = set(extras)
    for extra in extras:
        for requirement in map(Requirement, EXTRAS[extra]):
            if requirement.name == PYPROJECT["name"]:
                named |= requirement.extras
    expected = set(PYPROJECT["dependencies"])
    for extra in named:
        expected |= {r for r in EXTRAS[extra] if Requirement(r).name != PYPROJECT["name"]}
    assert set(lines) == expected


def test_requirements_expand_extras_that_name_others(requirements_script: ModuleType) -> None:
    project = {
        "name": "Pixel_Fleet",
        "dependencies": ["a"],
        "optional-dependencies": {
            "x": ["b", "c>=1"],
            "y": ["pixel-fleet[x]", "d"],
            "z": ["pixel.fleet[y,x]", "c>=1", "other[x]"],
        },
    }
    assert requirements_script.requirements(project, ["z"]) == ["a", "b", "c>=1", "d", "other[x]"]
    with pytest.raises(LookupError, match="unknown extra 'nope'.*x, y, z"):
        requirements_script.requirements(project, ["x", "nope"])


def test_requirements_script_says_which_extras_exist() -> None:
    script = REPO / "docker" / "requirements.py"
    bad = subprocess.run(
        [sys.executable, script, REPO / "pyproject.toml", "s3,nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "unknown extra 'nope'" in bad.stderr and "composite" in bad.stderr
    good = subprocess.run(
        [sys.executable, script, REPO / "pyproject.toml", "s3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert good.stdout.splitlines()[1:] == [*PYPROJECT["dependencies"], *EXTRAS["s3"]]


# -- the build context (.dockerignore) -----------------------------------------------------
@dataclass
class Pattern:
    """A .dockerignore line as Docker's pattern matcher reads it."""

    regex: re.Pattern[str]
    text: str
    exception: bool


def read_dockerignore(text: str) -> list[Pattern]:
    """Patterns in order; ``!`` lines are exceptions; ``/`` and trailing slashes dropped."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        patterns.append(Pattern(re.compile(_glob_regex(line)), line, exception))
    return patterns


def _glob_regex(pattern: str) -> str:
    """Go's filepath.Match plus ``**`` (any number of folders), as moby's patternmatcher."""
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end
        else:
            out += re.escape(c)
        i += 1
    return out + "$"


def ignored(patterns: list[Pattern], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for pattern in patterns:
        if any(pattern.regex.match(c) for c in candidates):
            verdict = not pattern.exception
    return verdict


def context_files(root: Path, patterns: list[Pattern]) -> Iterator[str]:
    """The files of ``root`` that ``docker build`` would send (relative, with ``/``)."""
    exceptions = [p.text for p in patterns if p.exception]
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        # Skip a left-out folder unless an exception could bring back something inside.
        dirs[:] = [
            d
            for d in dirs
            if not ignored(patterns, prefix + d)
            or any(e.startswith(prefix + d + "/") for e in exceptions)
        ]
        for name in files:
            if not ignored(patterns, prefix + name):
                yield prefix + name


@pytest.fixture(scope="module")
def patterns() -> list[Pattern]:
    return read_dockerignore(DOCKERIGNORE.read_text())


def test_the_pattern_matcher_follows_docker() -> None:
    rules = read_dockerignore("*\n!src/\n**/__pycache__\n!src/keep/__pycache__\n*.md\n!README*")
    assert ignored(rules, ".venv/bin/python")  # `*` matches the parent `.venv`
    assert not ignored(rules, "src/pixelfleet/cli/worker.py")
    assert ignored(rules, "src/a/__pycache__/x.pyc")
    assert not ignored(rules, "src/keep/__pycache__/x.pyc")
    assert ignored(rules, "CHANGES.md") and not ignored(rules, "README.md")
    assert ignored(read_dockerignore("**/*.py[cod]"), "a/b/c.pyc")
    assert not ignored(read_dockerignore("/build\n"), "src/build/x")


@pytest.mark.parametrize(
    "path",
    [
        ".venv",
        ".venv/bin/python",
        ".git/HEAD",
        ".git",
        "demo-output/photos/cat.thumb.jpg",
        "tests/data/bad/truncated_jpeg.jpg",
        "docs/screenshots/search.png",
        "benchmarks/thumbnails.py",
        ".hypothesis/examples/x",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".pytest_cache/v/x",
        "pixelfleet.db",
        "src/pixelfleet/__pycache__/cli.cpython-311.pyc",
        "src/pixelfleet.egg-info/PKG-INFO",
        "docker/__pycache__/requirements.cpython-311.pyc",
    ],
)
def test_the_context_leaves_out(patterns: list[Pattern], path: str) -> None:
    assert ignored(patterns, path)


def test_the_context_is_what_the_image_is_built_from(
    patterns: list[Pattern], dockerfile: Dockerfile
) -> None:
    files = set(context_files(REPO, patterns))
    assert {"pyproject.toml", "README.md", "docker/requirements.py"} <= files
    assert "src/pixelfleet/cli/worker.py" in files
    # The package data the wheel carries (templates, label names) is there too.
    for package, globs in PYPROJECT_TOML["tool"]["setuptools"]["package-data"].items():
        folder = "src/" + package.replace(".", "/") + "/"
        for glob in globs:
            assert fnmatch.filter(files, folder + glob), f"{folder}{glob}: not in the context"
    top = {"pyproject.toml", "README.md", "src", "docker"}
    assert {f.split("/")[0] for f in files} <= top
    assert not any(f.startswith((".venv/", ".git/")) for f in files)
    assert sum((REPO / f).stat().st_size for f in files) < 20 * 1024**2
    # Every COPY from the context finds what it names.
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy.args:
                continue
            for source in copy.words()[:-1]:
                source = source.rstrip("/")
                assert source in files or any(f.startswith(source + "/") for f in files), (
                    f"line {copy.line}: COPY {source} is not in the build context"
                )


# -- the image's steps, run for real ------------------------------------------------------
#: RUN lines that change the machine itself; the emulation skips them (they need root and
#: would add a user to this machine). Anything else a RUN does must stay in its folders.
SYSTEM_COMMANDS = ("useradd",)
#: Top-level folders the Dockerfile's RUN, COPY and ENV paths may use (mapped into a temp dir).
IMAGE_FOLDERS = {"build", "tools", "tmp", "opt", "home"}
_ABSOLUTE = re.compile(r"(?<![\w:/.${}-])/([A-Za-z0-9_.-]+)")


@dataclass
class Emulated:
    """The final stage after the emulation: its folder, environment and entrypoint."""

    root: Path
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    skipped: list[str]


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], ""), text)


def _host(root: Path, text: str) -> str:
    """``text`` with each absolute path of the image moved under ``root``."""

    def mapped(match: re.Match[str]) -> str:
        assert match[1] in IMAGE_FOLDERS, f"{text!r}: /{match[1]} is outside the image"
        return f"{root}/{match[1]}"

    return _ABSOLUTE.sub(mapped, text)


def _copy(source: Path, dest: Path, into: bool) -> None:
    if source.is_dir():  # COPY dir/ dest/ copies what is inside dir
        shutil.copytree(source, dest, dirs_exist_ok=True)
        return
    if into:
        dest.mkdir(parents=True, exist_ok=True)
        dest = dest / source.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, dest)


def emulate(
    dockerfile: Dockerfile,
    context: Path,
    work: Path,
    base_bin: Path,
    execute: bool,
    last: str | None = None,
) -> Emulated:
    """Run the Dockerfile's COPY, WORKDIR, ARG, ENV and RUN steps with each stage's files
    under ``work/<stage>``, up to the stage named ``last`` (default: all); ``execute=False``
    only checks that every step can be run."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIXELFLEET_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"))
    }
    roots: dict[str, Path] = {}
    result: Emulated | None = None
    for number, stage in enumerate(dockerfile.stages):
        root = work / (stage.name or f"stage{number}")
        roots[stage.name or str(number)] = root
        env = {**inherited, "PATH": f"{base_bin}:/usr/bin:/bin", "HOME": str(root / "root")}
        workdir, skipped, entrypoint, cmd = "/", [], [], []
        if execute:
            (root / "root").mkdir(parents=True)
        for instruction in stage.instructions:
            keyword, args, line = instruction.keyword, instruction.args, instruction.line
            if keyword == "ARG":
                name, sep, default = args.partition("=")
                env[name] = default if sep else dockerfile.global_args.get(name, "")
            elif keyword == "ENV":
                for word in instruction.words():
                    name, _, value = word.partition("=")
                    env[name] = _expand(_host(root, value), env)
            elif keyword == "WORKDIR":
                workdir = args
                if execute:
                    Path(_host(root, workdir)).mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                words = instruction.words()
                origin = context
                for flag in (w for w in words if w.startswith("--")):
                    assert flag.startswith("--from="), f"line {line}: COPY {flag}?"
                    origin = roots[flag.removeprefix("--from=")]
                *sources, dest = (w for w in words if not w.startswith("--"))
                target = Path(_host(root, dest if dest.startswith("/") else f"{workdir}/{dest}"))
                for source in sources:
                    if execute:
                        _copy(origin / source.lstrip("/"), target, dest.endswith("/"))
            elif keyword == "RUN":
                assert not args.startswith("["), f"line {line}: exec-form RUN is not emulated"
                if args.split()[0] in SYSTEM_COMMANDS:
                    skipped.append(args)
                    continue
                script = _host(root, args)
                if not execute:
                    continue
                done = subprocess.run(
                    ["/bin/sh", "-c", script],
                    cwd=_host(root, workdir),
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert done.returncode == 0, (
                    f"line {line}: RUN {args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                )
            elif keyword == "ENTRYPOINT":
                entrypoint = instruction.exec_form()
            elif keyword == "CMD":
                cmd = instruction.exec_form()
            else:
                assert keyword in ("LABEL", "USER"), f"line {line}: {keyword} is not emulated"
        result = Emulated(root, env, entrypoint, cmd, skipped)
        if stage.name is not None and stage.name == last:
            break
    assert result is not None
    return result


def test_every_step_of_the_image_can_be_emulated(dockerfile: Dockerfile, tmp_path: Path) -> None:
    final = emulate(dockerfile, REPO, tmp_path, tmp_path / "bin", execute=False)
    assert [s.split()[0] for s in final.skipped] == ["useradd"]
    assert final.entrypoint == ["pixelfleet"] and final.cmd == ["worker"]
    assert final.env["PATH"].startswith(f"{final.root}/opt/pixelfleet/bin:")
    with pytest.raises(AssertionError, match="outside the image"):
        emulate(
            parse_dockerfile("FROM python:3.11-slim\nRUN rm -rf /usr/lib\n"),
            REPO,
            tmp_path,
            tmp_path / "bin",
            execute=False,
        )


def build_context(tmp_path: Path, patterns: list[Pattern]) -> Path:
    """A copy of the build context as docker would send it: what .dockerignore lets through."""
    context = tmp_path / "context"
    for name in context_files(REPO, patterns):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, context / name)
    return context


def base_python(tmp_path: Path) -> Path:
    """A clean Python with pip, standing in for the base image's; returns its bin folder."""
    base = tmp_path / "base-python"
    subprocess.run([sys.executable, "-m", "venv", base], check=True)
    return base / "bin"


def wheel_requirements(wheel: Path, extras: set[str]) -> set[str]:
    """The wheel's own Requires-Dist for ``extras`` (and the extras they name), normalised."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    wanted, out = {""} | extras, set()
    while True:
        chosen = [
            r
            for r in requires
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in wanted)
        ]
        more = {e for r in chosen if r.name == metadata["Name"] for e in r.extras} - wanted
        if not more:
            break
        wanted |= more
    for r in chosen:
        if r.name != metadata["Name"]:
            r.marker = None
            out.add(str(r))
    return out


# Both touch the package index (setuptools for the wheel; every dependency for the image):
# `make test` runs the first (seconds); the second takes one to two minutes here, so it
# runs only with PIXELFLEET_IMAGE_TEST=1.
@pytest.mark.slow
def test_the_build_stage_makes_a_wheel_that_needs_only_the_listed_requirements(
    dockerfile: Dockerfile, patterns: list[Pattern], tmp_path: Path
) -> None:
    context = build_context(tmp_path, patterns)
    build = emulate(
        dockerfile, context, tmp_path / "image", base_python(tmp_path), execute=True, last="build"
    )
    folder = build.root / "build"
    (wheel,) = (folder / "dist").glob("*.whl")
    assert wheel.name == f"pixelfleet-{PYPROJECT['version']}-py3-none-any.whl"
    extras = (folder / "extras.txt").read_text().strip()
    assert extras == ",".join(image_extras(dockerfile))
    listed = {
        str(Requirement(line))
        for line in (folder / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    # The final stage installs the wheel with --no-index after these: nothing may be missing.
    assert wheel_requirements(wheel, set(extras.split(","))) == listed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "pixelfleet = pixelfleet.cli.main:cli" in archive.read(entry_points).decode()
    # Package data (pyproject's [tool.setuptools.package-data]) made it into the wheel.
    assert any(re.fullmatch(r"pixelfleet/server/templates/\w+\.html", n) for n in names)
    assert any(re.fullmatch(r"pixelfleet/labelers/data/\w+\.tsv", n) for n in names)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(
    os.environ.get("PIXELFLEET_IMAGE_TEST") != "1",
    reason="installs every dependency from the package index (1-2 min): PIXELFLEET_IMAGE_TEST=1",
)
def test_the_image_installs_and_its_entrypoint_runs(
    dockerfile: Dockerfile, patterns: list[Pattern], tmp_path: Path
) -> None:
    context = build_context(tmp_path, patterns)
    final = emulate(dockerfile, context, tmp_path / "image", base_python(tmp_path), execute=True)

    def run(*args: str) -> str:
        done = subprocess.run(
            [*final.entrypoint, *args],
            env=final.env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    venv = final.root / "opt" / "pixelfleet"
    assert shutil.which("pixelfleet", path=final.env["PATH"]) == str(venv / "bin" / "pixelfleet")
    assert "--ledger" in run(*final.cmd, "--help")
    assert "--image" in run("batch", "job-definition", "--help")
    printed = json.loads(
        run(
            "batch",
            "job-definition",
            str(REPO / "examples" / "naip-pgstac.toml"),
            "--image",
            "example.invalid/pixelfleet-worker:1",
        )
    )
    assert printed["containerProperties"]["command"] == final.cmd
    # Every extra's packages import, and pip finds nothing missing or in conflict.
    modules = [m for extra in image_extras(dockerfile) for m in EXTRA_MODULES[extra]]
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-c", f"import {', '.join(modules)}"], check=True)
    subprocess.run([python, "-m", "pip", "check"], check=True, env=final.env)

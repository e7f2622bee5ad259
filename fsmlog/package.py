"""The Lambda artifact: what ``sam deploy`` uploads for the worker function.

``fsmlog template`` writes a SAM template whose worker has ``Handler:
handlers.lambda_handler`` and ``CodeUri: build/lambda`` (relative to the
template, as SAM reads it). ``build`` fills that directory so the function runs
as is, with nothing built on AWS:

- the packages the function imports: ``eventlog``, ``projections``,
  ``handlers`` and ``fsmlog/__init__.py`` (for ``from fsmlog import Action``);
  not ``replay`` nor the CLI, console or template code, which Lambda never runs;
- the user's definitions (the root file as ``fsm.yaml``, where the runtime looks
  for it, and every file it imports, at the same relative place), the modules
  their actions live in, and the settings file beside them (the function itself
  reads its settings from the template's environment variables);
- the dependencies, pinned to the versions installed here (so Lambda runs what
  was tested) in a generated ``requirements.txt``, installed by pip as wheels
  for the function's runtime and architecture, never for this machine's:
  ``pip install --platform manylinux2014_x86_64 --only-binary=:all:
  --python-version 3.X --target DIR`` (``aarch64`` when the template's
  ``Architectures`` is ``arm64``). msgpack and PyYAML are C extensions; a wheel
  built for the build machine would not import on Lambda.

The directory is rebuilt from scratch each time; a directory fsmlog did not
build is never deleted (the marker file says which).
"""

from __future__ import annotations

import compileall
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eventlog.errors import FsmlogError
from eventlog.settings import SOURCE_SETTINGS, Settings
from projections.definition import Definitions

MARKER = ".fsmlog-package"  # in every directory this module built: only those are ever deleted
PACKAGES = ("eventlog", "projections", "handlers")  # whole, as the function imports them
FACADE = ("fsmlog", "__init__.py")  # ``from fsmlog import Action``; nothing else of fsmlog runs on Lambda
BASE_REQUIREMENTS = ("msgpack", "PyYAML", "tenacity")  # what the function imports (rich is the CLI's)
# the library a source's service needs on Lambda, by ``handlers.wiring.service_of``
SERVICE_REQUIREMENTS = {"redis": "redis", "memcached": "pymemcache"}
AWS_REQUIREMENT = "boto3"  # every AWS service; bundled so the function runs the tested version
NO_LIBRARY = ("sqlite", "emf", "?")
PLATFORMS = {"x86_64": "x86_64", "arm64": "aarch64"}
RUNTIME = re.compile(r"^python(3)\.(\d+)$")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


class PackageError(FsmlogError):
    """The artifact cannot be built; ``setting`` names the template property or option to change."""

    def __init__(self, message: str, *, setting: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.code = code


@dataclass(frozen=True)
class FunctionSpec:
    """What the template says about the worker function."""

    name: str  # its logical id
    handler: str  # module.function
    runtime: str  # python3.X
    code_uri: Path  # absolute: the template's CodeUri resolved against the template's directory
    architecture: str  # x86_64 or arm64

    @property
    def python_version(self) -> str:
        match = RUNTIME.match(self.runtime)
        if match is None:
            raise PackageError(f"function {self.name}'s Runtime {self.runtime!r} is not a Python runtime; set "
                               "Runtime to python3.10 .. python3.13 in the template", setting="Runtime")
        return f"{match.group(1)}.{match.group(2)}"

    @property
    def platform(self) -> str:
        return f"manylinux2014_{PLATFORMS[self.architecture]}"

    @property
    def platforms(self) -> list[str]:
        """The wheel tags the runtime's Linux takes: glibc 2.17 everywhere (Amazon Linux 2), and 2.28
        from python3.12 on, whose runtimes run on Amazon Linux 2023 (glibc 2.34)."""
        tags = [self.platform]
        if tuple(int(n) for n in self.python_version.split(".")) >= (3, 12):
            tags.append(f"manylinux_2_28_{PLATFORMS[self.architecture]}")
        return tags


@dataclass(frozen=True)
class Artifact:
    """A built artifact: where it is, what it runs and what went in."""

    directory: Path
    zip_path: Path | None
    spec: FunctionSpec
    requirements: tuple[str, ...]
    user_files: tuple[str, ...]  # relative to ``directory``
    size_bytes: int


class _TemplateLoader(yaml.SafeLoader):
    """Safe YAML that reads CloudFormation's short tags (``!Ref X``, ``!GetAtt A.B``) as plain values."""


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_TemplateLoader.add_multi_constructor("!", _short_tag)


def function_spec(template: Path) -> FunctionSpec:
    """The worker function of a SAM template (the one ``AWS::Serverless::Function``; Globals apply)."""
    try:
        doc = yaml.load(template.read_text(encoding="utf-8"), Loader=_TemplateLoader)  # noqa: S506 (safe loader)
    except FileNotFoundError:
        raise PackageError(f"template {template} not found; write it first with `fsmlog template --out {template}`",
                           code="template") from None
    except yaml.YAMLError as exc:
        raise PackageError(f"template {template} is not YAML ({' '.join(str(exc).split())}); render it again "
                           "with `fsmlog template --out FILE`", code="template") from None
    resources = doc.get("Resources") if isinstance(doc, dict) else None
    functions = {k: v for k, v in (resources or {}).items()
                 if isinstance(v, dict) and v.get("Type") == "AWS::Serverless::Function"}
    if len(functions) != 1:
        found = ", ".join(sorted(functions)) or "none"
        raise PackageError(f"template {template} must define one AWS::Serverless::Function (found: {found}); "
                           "render it with `fsmlog template --out FILE`", code="template")
    [(name, function)] = functions.items()
    globals_ = ((doc.get("Globals") or {}).get("Function") or {}) if isinstance(doc.get("Globals"), dict) else {}
    props = {**globals_, **(function.get("Properties") or {})}

    def prop(key: str) -> Any:
        value = props.get(key)
        if value is None:
            raise PackageError(f"function {name} in {template} has no {key}; render the template with "
                               "`fsmlog template --out FILE`", setting=key)
        return value

    code_uri = prop("CodeUri")
    if not isinstance(code_uri, str) or code_uri.startswith("s3://"):
        raise PackageError(f"function {name}'s CodeUri {code_uri!r} is not a local directory; set it to the "
                           "directory to build (fsmlog template writes build/lambda)", setting="CodeUri")
    where = (template.parent / code_uri).resolve()
    if where in (template.parent.resolve(), Path.cwd().resolve()) or where == Path(where.anchor):
        raise PackageError(f"function {name}'s CodeUri {code_uri!r} is the project directory itself, which "
                           "would upload everything in it; set CodeUri to a build directory, e.g. "
                           "`fsmlog template --code-uri build/lambda`", setting="CodeUri")
    architectures = props.get("Architectures") or ["x86_64"]
    architecture = architectures[0] if isinstance(architectures, list) and architectures else architectures
    if architecture not in PLATFORMS:
        raise PackageError(f"function {name}'s Architectures {architectures!r} is not one of "
                           f"{', '.join(PLATFORMS)}", setting="Architectures")
    spec = FunctionSpec(name, str(prop("Handler")), str(prop("Runtime")), where, str(architecture))
    spec.python_version  # noqa: B018 (checks the runtime now, before anything is built)
    return spec


# -- requirements ---------------------------------------------------------------------------------


def _pinned(name: str) -> str:
    """``name==installed version``: the function runs what was tested here; unpinned when not installed."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def requirements(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    """The function's dependencies: fsmlog's own, each configured source's client library, and ``extra``."""
    from handlers.wiring import service_of

    names = list(BASE_REQUIREMENTS)
    for setting in SOURCE_SETTINGS:
        value = settings.get(setting)
        if not value:
            continue
        service = service_of(str(value), settings)
        if service in NO_LIBRARY:
            continue
        library = SERVICE_REQUIREMENTS.get(service, AWS_REQUIREMENT)
        if service in SERVICE_REQUIREMENTS and AWS_REQUIREMENT not in names and str(value).startswith("arn:"):
            names.append(AWS_REQUIREMENT)  # an Elasticache ARN is resolved to its endpoint with boto3
        if library not in names:
            names.append(library)
    out = [_pinned(n) for n in names]
    for line in extra:
        line = line.strip()
        if line and not line.startswith("#") and line not in out:
            out.append(line)
    return out


def pip_command(spec: FunctionSpec, target: Path, requirements_file: Path, *,
                find_links: Sequence[str] = (), no_index: bool = False) -> list[str]:
    """pip installing ``requirements_file`` into ``target`` as wheels for the function's runtime."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--target", str(target), *(f"--platform={tag}" for tag in spec.platforms), "--implementation", "cp",
               "--python-version", spec.python_version, "--only-binary=:all:", "--no-compile",
               "--requirement", str(requirements_file)]
    for link in find_links:
        command += ["--find-links", link]
    if no_index:
        command.append("--no-index")
    return command


# -- the user's files -----------------------------------------------------------------------------


def _action_modules(definitions: Definitions) -> set[str]:
    """The top-level modules every action path of the definitions imports."""
    modules = set()
    for machine in definitions.machines.values():
        for state in machine.states:
            paths = [state.entry_action, state.do_action, state.exit_action]
            paths += [t.action for t in state.transitions]
            modules |= {p.split(".")[0] for p in paths if p}
    return modules - set(PACKAGES) - {"fsmlog"}


def _module_path(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        raise PackageError(f"action module {module!r} cannot be found to copy; put it beside the fsm.yaml",
                           code="actions")
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(str(spec.origin))


def _user_files(fsm: Path, definitions: Definitions) -> list[tuple[Path, str]]:
    """``(source, name in the artifact)`` of the definitions, their imports, actions and settings."""
    root = fsm.resolve().parent
    files: list[tuple[Path, str]] = [(fsm.resolve(), "fsm.yaml")]
    for source in definitions.sources[1:]:
        path = Path(source).resolve()
        try:
            files.append((path, path.relative_to(root).as_posix()))
        except ValueError:
            raise PackageError(f"{fsm} imports {source}, outside its directory {root}; move it under {root} "
                               "so the function finds it at the same relative path", code="definitions") from None
    for module in sorted(_action_modules(definitions)):
        path = _module_path(module)
        files.append((path, path.name))
    for name in ("settings.yaml", "settings.yml", "settings.json"):
        if (root / name).is_file():
            files.append((root / name, name))
    return files


# -- building -------------------------------------------------------------------------------------


def _clear(directory: Path) -> None:
    if directory.exists():
        if not directory.is_dir() or (any(directory.iterdir()) and not (directory / MARKER).exists()):
            raise PackageError(f"{directory} exists and was not built by `fsmlog package`; empty or remove it, "
                               "or point the template's CodeUri at another directory", setting="CodeUri")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("built by `fsmlog package`; deleted and rebuilt by it\n")


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=SKIPPED)
    else:
        shutil.copy2(source, target)


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _zip(directory: Path) -> Path:
    """``DIR.zip`` beside ``DIR`` (for ``aws lambda update-function-code``), files in a stable order."""
    out = directory.with_suffix(".zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.name != MARKER:
                archive.write(path, path.relative_to(directory).as_posix())
    return out


def _check_handler(spec: FunctionSpec, directory: Path) -> None:
    module, _, function = spec.handler.rpartition(".")
    parts = module.split(".") if module else []
    base = directory.joinpath(*parts)
    if not function or not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
        raise PackageError(f"function {spec.name}'s Handler {spec.handler!r} is not in the artifact; set "
                           "Handler to handlers.lambda_handler", setting="Handler")


def _check_definitions(fsm: Path, definitions: Definitions, directory: Path) -> None:
    """The copied definitions hash as the originals do: records written from either are the same machines'."""
    from projections.definition import load

    copied = load(directory / "fsm.yaml", check_actions=False)
    for name, machine in definitions.machines.items():
        if name not in copied.machines or copied.machines[name].hash != machine.hash:
            raise PackageError(f"the copy of {fsm} in {directory} defines machine {name!r} differently; "
                               "keep every file it imports under its directory", code="definitions")


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _copy_code(directory: Path, user: Iterable[tuple[Path, str]]) -> None:
    """fsmlog's packages the function imports, the ``Action`` facade, and the user's files."""
    for package in PACKAGES:
        _copy(Path(importlib.import_module(package).__file__ or "").parent, directory / package)
    import fsmlog

    _copy(Path(fsmlog.__file__ or ""), directory.joinpath(*FACADE))
    for source, name in user:
        _copy(source, directory / name)


def _install(spec: FunctionSpec, directory: Path, pinned: Sequence[str], *, find_links: Sequence[str],
             no_index: bool, run: Runner) -> None:
    """Write ``requirements.txt`` and have pip install its wheels for the function's runtime into ``directory``."""
    requirements_file = directory / "requirements.txt"
    requirements_file.write_text("# generated by `fsmlog package`: the function's dependencies, as tested\n"
                                 + "".join(f"{r}\n" for r in pinned))
    done = run(pip_command(spec, directory, requirements_file, find_links=find_links, no_index=no_index),
               capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout or "").splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("ERROR:")), lines[-1] if lines else "no output")
        raise PackageError(f"pip could not install the {spec.runtime} {spec.platform} wheels: {why} (offline? "
                           "pass --find-links DIR with the wheels, and --no-index)", code="pip")


def build(template: Path, fsm: Path, settings: Settings, *, extra_requirements: Iterable[str] = (),
          find_links: Sequence[str] = (), no_index: bool = False, make_zip: bool = False,
          run: Runner = subprocess.run) -> Artifact:
    """Build the artifact the template's function points at (see the module docstring)."""
    from fsmlog.cli import load_definitions

    spec = function_spec(template)
    definitions = load_definitions(str(fsm))  # checks every action imports, before anything is deleted
    user = _user_files(fsm, definitions)
    directory = spec.code_uri
    _clear(directory)
    try:
        _copy_code(directory, user)
        pinned = requirements(settings, extra_requirements)
        _install(spec, directory, pinned, find_links=find_links, no_index=no_index, run=run)
        if spec.python_version == f"{sys.version_info[0]}.{sys.version_info[1]}":
            # Lambda's code directory is read-only: without these each cold start compiles every module
            compileall.compile_dir(str(directory), quiet=2, workers=1)
        _check_handler(spec, directory)
        _check_definitions(fsm, definitions, directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)  # half built: nothing to deploy by mistake
        raise
    zip_path = _zip(directory) if make_zip else None
    return Artifact(directory, zip_path, spec, tuple(pinned), tuple(name for _, name in user), _size(directory))


def next_steps(template: Path, fsm: Path, artifact: Artifact) -> list[str]:
    """What to run after building, as the CLI prints it (each line fits 80 columns where it can)."""

    def shown(path: Path) -> str:
        rel = os.path.relpath(path)
        return str(path) if rel.startswith("..") else rel

    lines = [f"built {shown(artifact.directory)} ({artifact.size_bytes / 1e6:.1f} MB, {artifact.spec.runtime} "
             f"{artifact.spec.architecture}) for {artifact.spec.handler}"]
    if artifact.zip_path is not None:
        lines.append(f"zip: {shown(artifact.zip_path)}")
    start = f"fsmlog start {shown(fsm)} --machine NAME"
    width = max(len(start), len("fsmlog status ID"))
    return lines + [
        "next:",
        f"  sam deploy --guided --template-file {shown(template)}",
        f"  {start:<{width}}  # appends to the stream",
        f"  {'fsmlog status ID':<{width}}  # the deployed function moves it on",
    ]

"""The one builder of native artifacts: Java sources -> a jar, C/C++ sources -> a shared library.

Every javac and gcc/g++ call of the project goes through here (the generated code of a bundle,
the Spark block scorer and kernels, the Flink Kafka deserializer). Each artifact is cached under
`cache_dir` by the sha256 of everything that goes into it (source texts, flags, classpath,
resources, the compiler's path), written atomically, and reused by every later call with the same
inputs: a second Spark session or a rebuilt bundle with unchanged sources compiles nothing.

Fixed (non-generated) sources are real files shipped in the packages (`source_text`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import string
import subprocess
import tempfile
import zipfile
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Callable, Iterable, Mapping

from udfs.errors import PhotoscoreError

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "photoscore" / "build"


def source_path(package: str, name: str) -> Path:
    """Path of a source file shipped in `package` (e.g. `source_path("udfs", "jvm/BlockScorer.java")`)."""
    return Path(str(importlib_resources.files(package).joinpath(name)))


def source_text(package: str, name: str) -> str:
    """Text of a source file shipped in `package`."""
    return source_path(package, name).read_text()


def render(package: str, name: str, /, **values: object) -> str:
    """A source template shipped in `package` with its `${name}` placeholders filled in (every
    placeholder must be given: a missing one raises KeyError)."""
    return string.Template(source_text(package, name)).substitute({k: str(v) for k, v in values.items()})


def java_tool(name: str) -> str:
    """Path of a JDK tool (`java`, `javac`), preferring $JAVA_HOME/bin."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / name).is_file():
        return str(Path(home) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise PhotoscoreError(f"`{name}` not found: install a JDK 17+ or set JAVA_HOME")
    return found


def java_home() -> Path:
    """The JDK whose `javac` builds the jars (its include/ has jni.h)."""
    return Path(java_tool("javac")).resolve().parent.parent


def _digest(parts: Iterable[bytes | str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def _cached(cache_dir: Path, name: str, suffix: str, key: Iterable[bytes | str],
            make: Callable[[Path, Path], None]) -> Path:
    """`cache_dir/<name>-<key digest><suffix>`, made by `make(staged_path, scratch_dir)` if absent."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / f"{name}-{_digest(key)}{suffix}"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as tmp:
        staged = Path(tmp) / out.name
        make(staged, Path(tmp))
        os.replace(staged, out)  # atomic: concurrent builders never see half an artifact
    return out


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PhotoscoreError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{proc.stderr[-4000:]}")


def java_jar(sources: Mapping[str, str], *, name: str, what: str, cache_dir: Path | str = DEFAULT_CACHE,
             classpath: str | None = None, release: str = "17", javac_flags: tuple[str, ...] = (),
             resources: Mapping[str, Path] | None = None) -> Path:
    """Compile `sources` ({path under the source root, e.g. `photoscore/spark/X.java`: text}) into a
    cached jar, adding `resources` ({path in the jar: file}); returns the jar's path."""
    resources = dict(resources or {})
    javac = java_tool("javac")
    key = [javac, release, classpath or "", *javac_flags]
    for rel in sorted(sources):
        key += [rel, sources[rel]]
    for rel in sorted(resources):
        key += [rel, Path(resources[rel]).read_bytes()]

    def make(staged: Path, tmp: Path) -> None:
        src_root, classes = tmp / "src", tmp / "classes"
        files = []
        for rel, text in sources.items():
            path = src_root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            files.append(str(path))
        classes.mkdir()
        _run([javac, "--release", release, *javac_flags, "-d", str(classes),
              *(["-cp", classpath] if classpath else []), *files], f"javac of {what}")
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(classes.rglob("*.class")):
                zf.write(path, path.relative_to(classes).as_posix())
            for rel, path in sorted(resources.items()):
                zf.write(path, rel)

    return _cached(Path(cache_dir), name, ".jar", key, make)


def shared_library(sources: list[Path], *, name: str, what: str, cpp: bool = False,
                   cache_dir: Path | str = DEFAULT_CACHE, includes: tuple[Path, ...] = (),
                   defines: Mapping[str, str] | None = None) -> Path:
    """Compile C (or, with `cpp`, C++) `sources` with -O3 into a cached shared library (.so).

    -O3 for the baseline of the architecture, not -march=native: a library built here runs on any
    machine of the same OS and architecture.
    """
    if cpp:
        compiler, std = shutil.which("g++") or shutil.which("c++"), "-std=c++17"
    else:
        compiler, std = shutil.which("gcc") or shutil.which("cc"), "-std=c99"
    if compiler is None:
        raise PhotoscoreError(f"no {'C++' if cpp else 'C'} compiler on PATH: install gcc/g++ to build {what}")
    flags = [compiler, "-O3", std, "-shared", "-fPIC", *(f"-I{p}" for p in includes),
             *(f"-D{k}={v}" for k, v in sorted((defines or {}).items()))]
    key = [*flags, *(b for s in sources for b in (Path(s).name, Path(s).read_bytes()))]

    def make(staged: Path, tmp: Path) -> None:
        # -x: a `.c` source compiled as C++ for a C++ model (the JNI shim serves both languages).
        lang = ["-x", "c++" if cpp else "c"]
        _run([*flags, "-o", str(staged), *lang, *map(str, sources), "-lm"], f"compiling {what}")

    return _cached(Path(cache_dir), name, ".so", key, make)

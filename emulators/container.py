"""The one image (knative/Dockerfile), built and run here as a cluster node would run it.

    python -m emulators.container prepare   # an engine, and the base image the Dockerfile names
    python -m emulators.container build     # = make image

Whichever of Podman or Docker answers (``CONTAINER_ENGINE`` picks one) builds the image from
the repository root and runs its containers. Some hosts refuse what an OCI runtime does by
default: this project's build machines, whose sandbox rejects the default rlimits and crun's
cgroup handling. There a container starts only under runc with explicit ulimits and the host
network, and a build's RUN steps only with chroot isolation. The engine is probed once with
the base image; where a plain ``run`` fails, those flags are used. ``IMAGE_BUILD_FLAGS`` and
``IMAGE_RUN_FLAGS`` override the probe. None of this is in the Dockerfile: a host with a
working engine builds and runs it as it is.

Where no registry is reachable, ``prepare`` makes the base image from Debian's packages
(``emulators/local-base-image.sh``).
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emulators.manifests import REPO_ROOT

DOCKERFILE = REPO_ROOT / "knative" / "Dockerfile"
BASE_IMAGE_SCRIPT = Path(__file__).with_name("local-base-image.sh")
# The flags a host like this project's build machines needs (see the module doc).
SANDBOX_BUILD = ("--isolation", "chroot", "--network", "host")
SANDBOX_RUN = (
    "--runtime", "runc", "--network", "host",
    "--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:4096",
)  # fmt: skip
PROBE_TIMEOUT = 60.0


class ContainerSettings(BaseSettings):
    """Which engine, which image, and flags that replace the probed ones."""

    model_config = SettingsConfigDict(frozen=True)  # hashable: find_engine caches by it
    container_engine: str | None = Field(None, description="podman or docker (default: either)")
    image_tag: str = Field("ml-serving-functions", description="the image to build and run")
    image_build_flags: str | None = Field(None, description="extra `build` flags (shell words)")
    image_run_flags: str | None = Field(None, description="extra `run` flags (shell words)")


class EngineError(RuntimeError):
    """No engine here can build or run the image; the message says why in one line."""


@dataclass(frozen=True)
class Engine:
    """A container engine and the flags this host needs for it."""

    exe: str
    build_flags: tuple[str, ...]
    run_flags: tuple[str, ...]

    @property
    def name(self) -> str:
        return Path(self.exe).name

    @property
    def host_network(self) -> bool:
        """Containers share the host's ports: each must listen on a port of its own."""
        flags = " ".join(self.run_flags)
        return bool(re.search(r"--net(work)?[= ]host\b", flags))

    def command(
        self, *args: str, timeout: float = PROBE_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.exe, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def has_image(self, image: str) -> bool:
        return self.command("image", "inspect", image).returncode == 0

    def build(self, image: str, context: Path = REPO_ROOT) -> float:
        """Build the image from ``context``; the seconds it took. Fails with the build's log."""
        started = time.monotonic()
        args = ["build", *self.build_flags, "-f", str(DOCKERFILE), "-t", image, str(context)]
        result = self.command(*args, timeout=1800)
        if result.returncode != 0:
            raise EngineError(f"{self.name} build failed:\n{result.stdout}{result.stderr}")
        return time.monotonic() - started

    def start(
        self, image: str, env: Mapping[str, str], publish: tuple[int, int] | None = None
    ) -> str:
        """Start a detached container with ``env``; its id. ``publish`` = (host, container)
        port on loopback, where the container has a network of its own."""
        args = ["run", "--detach", *self.run_flags]
        if publish is not None and not self.host_network:
            args += ["--publish", f"127.0.0.1:{publish[0]}:{publish[1]}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        result = self.command(*args, image)
        if result.returncode != 0:
            raise EngineError(f"{self.name} run failed: {result.stderr.strip()}")
        return result.stdout.strip().splitlines()[-1]

    def run_once(self, image: str, *command: str) -> str:
        """Run ``command`` in a new container of ``image`` to its end; its standard output."""
        result = self.command("run", "--rm", *self.run_flags, image, *command)
        if result.returncode != 0:
            raise EngineError(f"{self.name} run {shlex.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def inspect(self, ref: str, template: str) -> str:
        """A field of an image's or a container's configuration (a Go template)."""
        return self.command("inspect", "--format", template, ref).stdout.strip()

    def state(self, container: str) -> str:
        """``running``, ``exited``, ... or empty where there is no such container."""
        return self.inspect(container, "{{.State.Status}}")

    def logs(self, container: str) -> str:
        result = self.command("logs", container)
        return result.stdout + result.stderr

    def stop(self, container: str, grace: int = 10) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; remove it. Its exit status, or None
        where it was gone already."""
        if not self.state(container):
            return None
        self.command("stop", "--time", str(grace), container, timeout=grace + PROBE_TIMEOUT)
        status = self.inspect(container, "{{.State.ExitCode}}")
        self.command("rm", "--force", container)
        return int(status) if status.lstrip("-").isdigit() else None


def base_image(dockerfile: Path = DOCKERFILE) -> str:
    """The image the Dockerfile's first stage is built FROM."""
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            return words[1]
    raise EngineError(f"{dockerfile} has no FROM")


def _answering(settings: ContainerSettings) -> tuple[list[str], list[str]]:
    """The engines on PATH whose ``info`` answers, and why each other one does not (a docker
    client with no engine behind it is on PATH but answers nothing)."""
    names = [settings.container_engine] if settings.container_engine else ["podman", "docker"]
    working, reasons = [], []
    for exe in [found for name in names if (found := shutil.which(name))]:
        info = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=PROBE_TIMEOUT)
        if info.returncode == 0:
            working.append(exe)
        else:
            reasons.append(f"{exe} info: {(info.stderr.strip().splitlines() or ['failed'])[-1]}")
    return working, reasons


@functools.cache
def find_engine(settings: ContainerSettings | None = None) -> Engine:
    """The first engine that answers, with the flags this host needs (probed, or from the
    settings). Raises EngineError naming what is missing."""
    settings = settings or ContainerSettings()
    working, reasons = _answering(settings)
    if not working:
        wanted = settings.container_engine or "podman or docker"
        raise EngineError("; ".join(reasons) or f"no container engine: install {wanted}")
    return _with_flags(Engine(working[0], (), ()), settings)


def _with_flags(engine: Engine, settings: ContainerSettings) -> Engine:
    build = settings.image_build_flags
    run = settings.image_run_flags
    if build is not None and run is not None:
        return Engine(engine.exe, tuple(shlex.split(build)), tuple(shlex.split(run)))
    base = base_image()
    if not engine.has_image(base):
        raise EngineError(f"no base image {base}: python -m emulators.container prepare")
    plain = engine.command("run", "--rm", base, "true").returncode == 0
    probed = Engine(engine.exe, (), ()) if plain else Engine(engine.exe, SANDBOX_BUILD, SANDBOX_RUN)
    if not plain and probed.command("run", "--rm", *SANDBOX_RUN, base, "true").returncode != 0:
        raise EngineError(f"{engine.name} cannot start a container of {base}, with or without "
                          f"{shlex.join(SANDBOX_RUN)} (set IMAGE_RUN_FLAGS)")  # fmt: skip
    return Engine(
        engine.exe,
        tuple(shlex.split(build)) if build is not None else probed.build_flags,
        tuple(shlex.split(run)) if run is not None else probed.run_flags,
    )


def prepare(settings: ContainerSettings) -> str:
    """An engine, and the base image: pulled, else made from Debian's packages."""
    working, reasons = _answering(settings)
    if not working and shutil.which("apt-get"):
        _step("installing podman and runc (Debian packages)")
        _apt_install(["podman", "runc"])
        working, reasons = _answering(settings)
    if not working:
        raise EngineError("; ".join(reasons) or "no container engine, no apt-get to install one")
    engine, base = Engine(working[0], (), ()), base_image()
    if engine.has_image(base):
        return f"{base} is here"
    _step(f"pulling {base}")
    if engine.command("pull", "--quiet", base, timeout=600).returncode == 0:
        return f"pulled {base}"
    if engine.name != "podman":
        raise EngineError(f"{engine.exe} cannot pull {base}, and the local base image needs podman")
    _step(f"no registry: making {base} from Debian's packages ({BASE_IMAGE_SCRIPT.name})")
    subprocess.run(["bash", str(BASE_IMAGE_SCRIPT)], check=True)
    return f"made {base}"


def _apt_install(packages: Sequence[str]) -> None:
    install = ["apt-get", "install", "-y", "-qq", *packages]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)


def _step(line: str) -> None:
    sys.stdout.write(f"image: {line}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "build"])
    args = parser.parse_args(argv)
    settings = ContainerSettings()
    try:
        if args.step == "prepare":
            _step(prepare(settings))
            return 0
        engine = find_engine(settings)
        flags = f" {shlex.join(engine.build_flags)}" if engine.build_flags else ""
        _step(f"{engine.name} build{flags} -f knative/Dockerfile -t {settings.image_tag} .")
        took = engine.build(settings.image_tag)
        _step(f"built {settings.image_tag} in {took:.0f} s")
        return 0
    except (EngineError, subprocess.CalledProcessError) as e:
        sys.stderr.write(f"image: {e}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

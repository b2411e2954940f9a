"""Install promtool into .tools/ for the tests of the Prometheus rules (deploy/monitoring).

Debian's `prometheus` package carries promtool; we take only that binary, without installing the
package (no server, no service): `apt-get download` fetches the .deb (apt checks it against the
signed archive index), `dpkg-deb -x` unpacks it into a temporary directory. As root, with no
package lists yet (a fresh CI container), `apt-get update` runs first. Re-running is a no-op once
.tools/promtool answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / ".tools" / "promtool"
PACKAGE = "prometheus"


def installed_version() -> str | None:
    if not TARGET.exists():
        return None
    out = subprocess.run([TARGET, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else None


def download(into: str) -> bool:
    return subprocess.run(["apt-get", "download", PACKAGE], cwd=into, check=False).returncode == 0


def main() -> int:
    if installed_version() is not None:
        return 0
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("error: promtool comes from Debian's prometheus package: apt-get not found", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching promtool (Debian package {PACKAGE}) with apt-get download")
        if not download(tmp) and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-q"], check=True)
            download(tmp)
        debs = list(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if not debs:
            print(f"error: apt-get download {PACKAGE} failed", file=sys.stderr)
            return 1
        unpacked = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
        TARGET.parent.mkdir(exist_ok=True)
        partial = TARGET.with_suffix(".partial")
        shutil.copyfile(unpacked / "usr" / "bin" / "promtool", partial)
        partial.chmod(0o755)
        partial.replace(TARGET)
    version = installed_version()
    if version is None:
        print(f"error: {TARGET} does not run", file=sys.stderr)
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main())

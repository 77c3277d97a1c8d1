"""A PEP 517 build backend for the praas SDK, standard library only, so that
`pip install ./sdk/python` needs nothing from a package index: the package
is pure Python, and a wheel is a zip file with three metadata files."""

from __future__ import annotations

import base64
import hashlib
import os
import tarfile
import zipfile
from typing import Dict, List, Optional

NAME = "praas"
VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "py3-none-any"

METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: Python functions for praas cloud processes (Process-as-a-Service)
Requires-Python: >=3.9
"""

WHEEL = f"""Wheel-Version: 1.0
Generator: praas_build
Root-Is-Purelib: true
Tag: {TAG}
"""


def _files() -> List[str]:
    pkg = os.path.join(ROOT, NAME)
    return sorted(f"{NAME}/{f}" for f in os.listdir(pkg) if f.endswith(".py") or f == "py.typed")


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings: Optional[Dict[str, str]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict[str, str]] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[Dict[str, str]] = None) -> List[str]:
    return []


def _wheel(wheel_directory: str, editable: bool) -> str:
    name = f"{NAME}-{VERSION}-{TAG}.whl"
    info = f"{NAME}-{VERSION}.dist-info"
    records = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        entries: List[tuple[str, bytes]] = []
        if editable:
            entries.append((f"{NAME}.pth", (ROOT + "\n").encode()))
        else:
            for f in _files():
                with open(os.path.join(ROOT, f), "rb") as fh:
                    entries.append((f, fh.read()))
        entries += [(f"{info}/METADATA", METADATA.encode()), (f"{info}/WHEEL", WHEEL.encode())]
        for path, data in entries:
            z.writestr(path, data)
            records.append(_record_line(path, data))
        records.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return name


def build_wheel(wheel_directory: str, config_settings: Optional[Dict[str, str]] = None,
                metadata_directory: Optional[str] = None) -> str:
    return _wheel(wheel_directory, editable=False)


def build_editable(wheel_directory: str, config_settings: Optional[Dict[str, str]] = None,
                   metadata_directory: Optional[str] = None) -> str:
    return _wheel(wheel_directory, editable=True)


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, str]] = None) -> str:
    base = f"{NAME}-{VERSION}"
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for f in _files() + ["pyproject.toml", "_build/praas_build.py"]:
            t.add(os.path.join(ROOT, f), arcname=f"{base}/{f}")
        data = METADATA.encode()
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(data)
        import io

        t.addfile(ti, io.BytesIO(data))
    return name

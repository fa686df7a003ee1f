"""Re-fetch the dashboard's vendored JavaScript from the npm registry, verified, and check it.

    python gateway/http/static/dashboard/vendor/update.py                  # re-fetch, verify
    python gateway/http/static/dashboard/vendor/update.py uplot@1.6.33     # move to a version
    python gateway/http/static/dashboard/vendor/update.py --check          # verify; no network

`make dashboard-assets` runs the first. `manifest.json` pins each package: its version, the
`integrity` of its npm tarball (sha512, as the registry publishes it) and the `sha384` of each file
taken from it. A plain re-fetch must reproduce the pinned tarball exactly; naming `package@version`
moves that package (its new digests are recorded). The files each package contributes are listed
in `WANTED` below; the JavaScript modules' relative imports are followed, so a package's hashed
chunks (graphql-ws's `common-*.js`) come along. Each file is written to
`<package>@<version>/<file>` next to this script with the package's LICENSE; `../vendor.js` and
`../vendor.css` (what the page imports) and the table of README.md are rewritten from the manifest.
Nothing is written unless every tarball and file verifies.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE.parent
MANIFEST = HERE / "manifest.json"
README = HERE / "README.md"
VENDOR_JS = DASHBOARD / "vendor.js"
VENDOR_CSS = DASHBOARD / "vendor.css"
LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "license", "LICENCE")
TABLE_START, TABLE_END = "<!-- assets:start -->", "<!-- assets:end -->"

# package -> (the files the page uses, what vendor.js exports from its first module)
WANTED: dict[str, tuple[tuple[str, ...], str]] = {
    "uplot": (("dist/uPlot.esm.js", "dist/uPlot.min.css"), "default as uPlot"),
    "graphql-ws": (("dist/client.js",), "createClient"),
}
Entry = dict[str, Any]  # one package of manifest.json
RELATIVE_IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*["'](\.{1,2}/[^"']+)["']""")


def integrity(algorithm: str, data: bytes) -> str:
    return f"{algorithm}-" + base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def relative_imports(file: str, data: bytes) -> list[str]:
    """The files a JavaScript module imports by relative path, as paths inside its package."""
    if not file.endswith(".js"):
        return []
    base = posixpath.dirname(file)
    return [posixpath.normpath(posixpath.join(base, found))
            for found in RELATIVE_IMPORT.findall(data.decode("utf-8"))]


def _member(archive: tarfile.TarFile, name: str) -> bytes | None:
    try:
        extracted = archive.extractfile(f"package/{name}")
    except KeyError:
        return None
    return extracted.read() if extracted is not None else None


def pack(package: str, version: str, tmp: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """`npm pack` one package; returns its manifest entry (without files) and its files: the
    wanted ones, what they import, and `LICENSE`."""
    print(f"npm pack {package}@{version}", file=sys.stderr)
    done = subprocess.run(["npm", "pack", "--json", f"{package}@{version}"], cwd=tmp,
                          check=True, capture_output=True, text=True)
    info = json.loads(done.stdout)[0]
    tarball = (tmp / info["filename"]).read_bytes()
    files: dict[str, bytes] = {}
    with tarfile.open(tmp / info["filename"]) as archive:
        package_json = json.loads(_member(archive, "package.json") or b"{}")
        todo = list(WANTED[package][0])
        while todo:
            name = todo.pop()
            if name in files:
                continue
            data = _member(archive, name)
            if data is None:
                raise SystemExit(f"nothing written: {package}@{version} has no {name}")
            files[name] = data
            todo += relative_imports(name, data)
        license_text = next((text for name in LICENSE_NAMES
                             if (text := _member(archive, name)) is not None), None)
    if license_text is None:
        raise SystemExit(f"nothing written: {package}@{version} ships no LICENSE file")
    files["LICENSE"] = license_text
    entry = {"package": package, "version": package_json.get("version", version),
             "license": str(package_json.get("license")), "tarball": integrity("sha512", tarball)}
    return entry, files


def fetch(pins: dict[str, str], recorded: dict[str, Entry],
          out: Path) -> list[Entry]:
    """Pack every package at its pinned version into `out`; a version already in the manifest
    must come back as the same tarball."""
    entries: list[Entry] = []
    with tempfile.TemporaryDirectory() as tmp:
        for package, version in pins.items():
            entry, files = pack(package, version, Path(tmp))
            old = recorded.get(package)
            if old and old["version"] == entry["version"] and old["tarball"] != entry["tarball"]:
                raise SystemExit(f"nothing written: {package}@{version}: the registry's tarball "
                                 f"{entry['tarball']} is not the pinned {old['tarball']}")
            base = out / f"{package}@{entry['version']}"
            for name, data in files.items():
                (base / name).parent.mkdir(parents=True, exist_ok=True)
                (base / name).write_bytes(data)
            entries.append({**entry, "entry": list(WANTED[package][0]), "files": {
                name: integrity("sha384", data) for name, data in sorted(files.items())
                if name != "LICENSE"}})
    return entries


def vendor_js(entries: list[Entry]) -> str:
    lines = ["// Generated by vendor/update.py from vendor/manifest.json: the vendored modules,",
             "// imported by the dashboard's own modules from here (one place names versions)."]
    for entry in entries:
        module = next(f for f in entry["entry"] if f.endswith(".js"))
        exported = WANTED[str(entry["package"])][1]
        lines.append(f'export {{ {exported} }} from '
                     f'"./vendor/{entry["package"]}@{entry["version"]}/{module}";')
    return "\n".join(lines) + "\n"


def vendor_css(entries: list[Entry]) -> str:
    lines = ["/* Generated by vendor/update.py from vendor/manifest.json: vendored styles. */"]
    lines += [f'@import url("vendor/{e["package"]}@{e["version"]}/{f}");'
              for e in entries for f in e["entry"] if f.endswith(".css")]
    return "\n".join(lines) + "\n"


def readme_table(entries: list[Entry]) -> str:
    rows = ["| package | version | file | sha384 | license |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| `{e['package']}` | {e['version']} | `{name}` | `{digest}` | {e['license']} |"
             for e in entries for name, digest in e["files"].items()]
    return "\n".join(rows)


def write(entries: list[Entry], staging: Path) -> None:
    old = json.loads(MANIFEST.read_text())["packages"] if MANIFEST.exists() else []
    for entry in old:
        folder = HERE / f"{entry['package']}@{entry['version']}"
        if not any((e["package"], e["version"]) == (entry["package"], entry["version"])
                   for e in entries):
            shutil.rmtree(folder, ignore_errors=True)
    for entry in entries:
        base = f"{entry['package']}@{entry['version']}"
        shutil.rmtree(HERE / base, ignore_errors=True)
        shutil.copytree(staging / base, HERE / base)
    MANIFEST.write_text(json.dumps({"packages": entries}, indent=2) + "\n")
    VENDOR_JS.write_text(vendor_js(entries))
    VENDOR_CSS.write_text(vendor_css(entries))
    text = README.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    README.write_text(text[:start] + "\n" + readme_table(entries) + "\n" + text[end:])


def check() -> list[str]:
    """What is wrong here: a missing file or LICENSE, a digest that differs from the manifest, a
    module importing a file that is not vendored, vendor.js/vendor.css not as generated."""
    problems = []
    entries = json.loads(MANIFEST.read_text())["packages"]
    for entry in entries:
        base = HERE / f"{entry['package']}@{entry['version']}"
        if not (base / "LICENSE").is_file():
            problems.append(f"missing: {base.name}/LICENSE")
        for name, digest in entry["files"].items():
            path = base / name
            if not path.is_file():
                problems.append(f"missing: {base.name}/{name}")
                continue
            data = path.read_bytes()
            if integrity("sha384", data) != digest:
                problems.append(f"digest differs: {base.name}/{name}")
            problems += [f"not vendored: {base.name}/{imported} (imported by {name})"
                         for imported in relative_imports(name, data)
                         if imported not in entry["files"]]
    if set(WANTED) != {e["package"] for e in entries}:
        problems.append("manifest.json does not list the packages of WANTED: run this script")
    if not VENDOR_JS.is_file() or VENDOR_JS.read_text() != vendor_js(entries):
        problems.append("vendor.js is not what the manifest makes: run this script")
    if not VENDOR_CSS.is_file() or VENDOR_CSS.read_text() != vendor_css(entries):
        problems.append("vendor.css is not what the manifest makes: run this script")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pins", nargs="*", metavar="PACKAGE@VERSION",
                        help="move these packages to these versions")
    parser.add_argument("--check", action="store_true", help="verify the files here; no network")
    args = parser.parse_args()
    if args.check:
        problems = check()
        print("\n".join(problems) or "ok: every vendored file matches the manifest")
        raise SystemExit(1 if problems else 0)
    recorded = {e["package"]: e for e in json.loads(MANIFEST.read_text())["packages"]} \
        if MANIFEST.exists() else {}
    pins = {package: str(entry["version"]) for package, entry in recorded.items()
            if package in WANTED}
    for pin in args.pins:
        package, _, version = pin.rpartition("@")
        if package not in WANTED or not version:
            raise SystemExit(f"expected PACKAGE@VERSION with PACKAGE one of {sorted(WANTED)}")
        pins[package] = version
    missing = set(WANTED) - set(pins)
    if missing:
        raise SystemExit(f"no version pinned for {sorted(missing)}: name it as PACKAGE@VERSION")
    with tempfile.TemporaryDirectory() as staging:
        entries = fetch({p: pins[p] for p in WANTED}, recorded, Path(staging))
        write(entries, Path(staging))
    for entry in entries:
        print(f"{entry['tarball']}  {entry['package']}@{entry['version']}")


if __name__ == "__main__":
    main()

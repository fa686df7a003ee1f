"""Re-fetch GraphiQL's assets from the npm registry: the files the CDN tags of Strawberry's own
`strawberry/static/graphiql.html` name, each checked against the tag's `integrity` (sha384).

    python gateway/http/static/graphiql/update.py          # fetch (npm pack), verify, write
    python gateway/http/static/graphiql/update.py --check  # verify the files here; no network

`make graphiql-assets` runs the first. Run it after a Strawberry upgrade that changes the tags
(tests/test_graphiql.py fails until then). It writes, next to this script, each file under
`<package>@<version>/<file>` (the path unpkg gives it, which is also the path the gateway serves
it under, after `/graphiql/`), each package's LICENSE, `manifest.json` (what the gateway reads)
and the table of README.md. Nothing is written unless every file matches its integrity.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html.parser
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
README = HERE / "README.md"
CDN = re.compile(r"^https://unpkg\.com/(?P<package>(?:@[^/@]+/)?[^/@]+)@(?P<version>[^/]+)"
                 r"/(?P<file>.+)$")
LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "license", "LICENCE")
TABLE_START, TABLE_END = "<!-- assets:start -->", "<!-- assets:end -->"


@dataclass(frozen=True)
class Tag:
    """One `<script src>` or `<link rel=stylesheet href>` of Strawberry's page."""

    kind: str  # "script" or "stylesheet"
    url: str
    integrity: str

    @property
    def parts(self) -> tuple[str, str, str]:
        match = CDN.match(self.url)
        if match is None:
            raise SystemExit(f"not an unpkg URL this script understands: {self.url}")
        return match["package"], match["version"], match["file"]


class _TagParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[Tag] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "script" and found.get("src"):
            self.tags.append(Tag("script", found["src"], found.get("integrity", "")))
        elif tag == "link" and found.get("rel") == "stylesheet" and found.get("href"):
            self.tags.append(Tag("stylesheet", found["href"], found.get("integrity", "")))


def strawberry_tags() -> list[Tag]:
    """The asset tags of the installed Strawberry's GraphiQL page, in page order."""
    import strawberry  # the project's own dependency: run this with the project's Python

    page = Path(strawberry.__file__).parent / "static" / "graphiql.html"
    parser = _TagParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.tags


def integrity_of(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def _member(archive: tarfile.TarFile, name: str) -> bytes | None:
    try:
        extracted = archive.extractfile(f"package/{name}")
    except KeyError:
        return None
    return extracted.read() if extracted is not None else None


def _repository(package_json: dict[str, object]) -> str:
    """`github.com/owner/name` of a package.json's repository, whatever way it is written."""
    repo = package_json.get("repository")
    url = repo.get("url", "") if isinstance(repo, dict) else str(repo or "")
    url = re.sub(r"^(git\+)?(https?|git|ssh)://(git@)?", "", str(url))
    return url.removesuffix(".git").rstrip("/")


def fetch(out: Path) -> list[dict[str, str]]:
    """`npm pack` each package once, keep the tags' files and the LICENSE, verify; returns the
    manifest entries. Files are written under `out`."""
    tags = strawberry_tags()
    packs: dict[tuple[str, str], tuple[dict[str, object], dict[str, bytes]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tag in tags:
            package, version, _ = tag.parts
            if (package, version) in packs:
                continue
            print(f"npm pack {package}@{version}", file=sys.stderr)
            done = subprocess.run(["npm", "pack", "--json", f"{package}@{version}"], cwd=tmp,
                                  check=True, capture_output=True, text=True)
            tarball = Path(tmp) / json.loads(done.stdout)[0]["filename"]
            with tarfile.open(tarball) as archive:
                package_json = json.loads(_member(archive, "package.json") or b"{}")
                files = {tag.parts[2]: data for tag in tags if tag.parts[:2] == (package, version)
                         if (data := _member(archive, tag.parts[2])) is not None}
                for name in LICENSE_NAMES:
                    if (text := _member(archive, name)) is not None:
                        files["LICENSE"] = text
                        break
            packs[(package, version)] = (package_json, files)

    entries, problems = [], []
    for tag in tags:
        package, version, file = tag.parts
        package_json, files = packs[(package, version)]
        data = files.get(file)
        if data is None:
            problems.append(f"{package}@{version} has no {file}")
            continue
        actual = integrity_of(data)
        if actual != tag.integrity:
            problems.append(f"{package}@{version}/{file}: {actual} != {tag.integrity}")
            continue
        license_note = "LICENSE from the package"
        if "LICENSE" not in files:
            # A monorepo package that ships no LICENSE of its own (@graphiql/plugin-explorer):
            # the LICENSE of a package from the same repository, which covers it.
            donor = next(((p, v) for (p, v), (pj, fs) in packs.items()
                          if "LICENSE" in fs and _repository(pj) == _repository(package_json)),
                         None)
            if donor is None:
                problems.append(f"{package}@{version} ships no LICENSE file")
                continue
            files["LICENSE"] = packs[donor][1]["LICENSE"]
            license_note = (f"LICENSE of {donor[0]}@{donor[1]}, same repository "
                            f"({_repository(package_json)}): the package ships none")
        entries.append({"kind": tag.kind, "package": package, "version": version, "file": file,
                        "integrity": tag.integrity, "license": str(package_json.get("license")),
                        "license_file": license_note})
    if problems:
        raise SystemExit("nothing written:\n  " + "\n  ".join(problems))

    for entry in entries:
        base = out / f"{entry['package']}@{entry['version']}"
        target = base / entry["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(packs[(entry["package"], entry["version"])][1][entry["file"]])
        (base / "LICENSE").write_bytes(packs[(entry["package"], entry["version"])][1]["LICENSE"])
    return entries


def _stale_dirs(old: list[dict[str, str]], new: list[dict[str, str]]) -> set[Path]:
    keep = {f"{e['package']}@{e['version']}" for e in new}
    return {HERE / f"{e['package']}@{e['version']}" for e in old} - {HERE / k for k in keep}


def readme_table(entries: list[dict[str, str]]) -> str:
    rows = ["| package | version | file (served at `/graphiql/<package>@<version>/<file>`) "
            "| integrity | license |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| `{e['package']}` | {e['version']} | `{e['file']}` | `{e['integrity']}` "
             f"| {e['license']} |" for e in entries]
    return "\n".join(rows)


def write(entries: list[dict[str, str]]) -> None:
    old = json.loads(MANIFEST.read_text())["assets"] if MANIFEST.exists() else []
    for stale in _stale_dirs(old, entries):
        shutil.rmtree(stale, ignore_errors=True)
        if stale.parent != HERE and not any(stale.parent.iterdir()):
            stale.parent.rmdir()  # an emptied scope folder (`@graphiql/`)
    MANIFEST.write_text(json.dumps({"assets": entries}, indent=2) + "\n")
    text = README.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    README.write_text(text[:start] + "\n" + readme_table(entries) + "\n" + text[end:])


def check() -> list[str]:
    """What is wrong with the files here: a missing file or LICENSE, a digest that differs from
    the manifest, a manifest that differs from Strawberry's tags."""
    problems = []
    entries = json.loads(MANIFEST.read_text())["assets"]
    for entry in entries:
        base = HERE / f"{entry['package']}@{entry['version']}"
        path = base / entry["file"]
        if not path.is_file():
            problems.append(f"missing: {path.relative_to(HERE)}")
        elif integrity_of(path.read_bytes()) != entry["integrity"]:
            problems.append(f"digest differs: {path.relative_to(HERE)}")
        if not (base / "LICENSE").is_file():
            problems.append(f"missing: {base.relative_to(HERE)}/LICENSE")
    ours = [(e["kind"], f"https://unpkg.com/{e['package']}@{e['version']}/{e['file']}",
             e["integrity"]) for e in entries]
    theirs = [(t.kind, t.url, t.integrity) for t in strawberry_tags()]
    if ours != theirs:
        problems.append("manifest.json differs from Strawberry's graphiql.html: run this script")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify the files here; no network")
    args = parser.parse_args()
    if args.check:
        problems = check()
        print("\n".join(problems) or "ok: every asset matches its integrity")
        raise SystemExit(1 if problems else 0)
    with tempfile.TemporaryDirectory() as staging:
        entries = fetch(Path(staging))
        for entry in entries:
            base = f"{entry['package']}@{entry['version']}"
            shutil.copytree(Path(staging) / base, HERE / base, dirs_exist_ok=True)
    write(entries)
    for entry in entries:
        print(f"{entry['integrity']}  {entry['package']}@{entry['version']}/{entry['file']}")


if __name__ == "__main__":
    main()

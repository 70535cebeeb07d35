"""The examples of README.md and docs/*.md, parsed and run the way a reader would run them.

A page is read as fenced code blocks. An HTML comment on the line(s) before a block may tell the
runner what the block is (``<!-- doc-test: KIND ARGUMENT -->``); without one, a block is run
according to its language:

* ``bash``/``sh``/``shell``: run by bash (``set -euo pipefail``) in the session folder, with the
  venv's ``bin`` first on ``PATH`` (what ``. .venv/bin/activate`` does). Shell variables carry
  over from block to block, as in one terminal. curl fails on HTTP errors (a ``.curlrc`` with
  ``fail-with-body``), so an example that gets an error answer fails the test.
* ``python``: run by the venv's python in the session folder, one process per block.
* ``json`` / ``toml``: must parse; a JSON object with ``model``, ``data`` and ``engine`` keys is
  validated against the committed job-spec schema.
* ``text`` or no language: not code (file layouts, formulas).

Kinds of ``doc-test`` comment:

* ``skip (reason)``: not run; the reason is required and the test lists every skip.
* ``file NAME``: the block is written to NAME in the session folder (after the checks above).
* ``background (reason)``: a long-running command (``neurflow serve``); started in its own process
  group, awaited on ``/health``, stopped when the session ends.
* ``fixture NAME (reason)``: the runner puts a stand-in for a file the reader brings (e.g. their
  CLIP bundle) into the session folder, then runs the block.
* ``fails (reason)``: a shell block that shows an error: it must exit non-zero with the CLI's one-line
  error or an API problem document, never a traceback.
* ``in-repo``: a shell block run in the repository root, *without* the venv on ``PATH``.

All pages share one session folder and one server, in order: README.md first, so the docs pages
may use the quickstart's files (``model.safetensors``, ``images/``, ``out/circuit.json``, ...) and
its variables (``$K``, ``$S``, ``$CIRCUIT``, ...). The docs' port 8000 is replaced by a free
loopback port.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"bash", "sh", "shell"}
DATA_LANGS = {"json", "toml"}
TEXT_LANGS = {"", "text"}
#: what a reader would have to replace by hand: <job id>, {...}, [..., ...], nf_...
PLACEHOLDER = re.compile(r"<[a-z][\w ]*>|\{\.\.\.\}|\.\.\.\]|nf_\.\.\.")
KINDS = {"skip", "file", "background", "fixture", "fails", "in-repo"}
NEEDS_REASON = {"skip", "background", "fixture", "fails"}
DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->")
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
DOC_PORT = 8000
#: the order pages run in: README first (the quickstart makes the files the docs pages use)
FIRST = "README.md"


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repo
    line: int  # line of the opening fence (1-based)
    lang: str
    text: str
    kind: str | None = None  # the doc-test directive, if any
    arg: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def reason(self) -> str:
        match = re.search(r"\((.+)\)\s*$", self.arg)
        return match.group(1).strip() if match else ""

    @property
    def name(self) -> str:
        """The first word of the argument (a file or fixture name)."""
        return self.arg.split()[0] if self.arg.split() else ""


class DocError(AssertionError):
    """A page breaks the rules above (unknown language, directive without a block, ...)."""


def pages() -> list[Path]:
    docs = sorted((REPO / "docs").glob("*.md"))
    return [REPO / FIRST, *docs]


def parse(path: Path) -> list[Block]:
    page = str(path.relative_to(REPO))
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    pending: tuple[str, str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.fullmatch(line.strip())
        fence = FENCE.match(line)
        if directive:
            if pending:
                raise DocError(f"{page}:{pending[2]}: doc-test directive is not followed by a code block")
            kind, arg = directive.group("kind"), directive.group("arg")
            if kind not in KINDS:
                raise DocError(f"{page}:{i + 1}: unknown doc-test directive {kind!r}; known: {sorted(KINDS)}")
            pending = (kind, arg, i + 1)
        elif fence:
            end = i + 1
            while end < len(lines) and lines[end].rstrip() != fence.group("fence"):
                end += 1
            if end == len(lines):
                raise DocError(f"{page}:{i + 1}: code block is never closed")
            kind, arg = (pending[0], pending[1]) if pending else (None, "")
            blocks.append(Block(page, i + 1, fence.group("lang").lower(), "\n".join(lines[i + 1:end]) + "\n", kind, arg))
            pending = None
            i = end
        elif line.strip() and pending:
            raise DocError(f"{page}:{pending[2]}: doc-test directive is not followed by a code block")
        i += 1
    if pending:
        raise DocError(f"{page}:{pending[2]}: doc-test directive is not followed by a code block")
    return blocks


def check_block(block: Block) -> None:
    """Static checks: the language is known, a directive fits it, data blocks parse."""
    lang = block.lang
    if lang not in SHELL_LANGS | {"python"} | DATA_LANGS | TEXT_LANGS:
        raise DocError(f"{block.where}: unknown code-block language {lang!r}; use bash, python, json, toml or text")
    if block.kind in NEEDS_REASON and not block.reason:
        raise DocError(f"{block.where}: doc-test {block.kind} needs a reason in parentheses")
    if block.kind in {"background", "fails", "in-repo"} and lang not in SHELL_LANGS:
        raise DocError(f"{block.where}: doc-test {block.kind} applies to shell blocks only")
    if block.kind in {"file", "fixture"} and not block.name:
        raise DocError(f"{block.where}: doc-test {block.kind} needs a name")
    if lang == "json":
        try:
            document = json.loads(block.text)
        except json.JSONDecodeError as exc:
            raise DocError(f"{block.where}: JSON example does not parse: {exc}") from None
        if isinstance(document, dict) and {"model", "data", "engine"} <= document.keys():
            validate_jobspec(document, block)
    elif lang == "toml":
        try:
            tomllib.loads(block.text)
        except tomllib.TOMLDecodeError as exc:
            raise DocError(f"{block.where}: TOML example does not parse: {exc}") from None
    if lang in SHELL_LANGS | {"python"} and block.kind != "skip":
        found = PLACEHOLDER.search(block.text)
        if found:
            raise DocError(f"{block.where}: the example has a placeholder, {found.group(0)!r}; a reader cannot run it as is")


def validate_jobspec(document: dict, block: Block) -> None:
    import jsonschema

    schema = json.loads((REPO / "core" / "schemas" / "jobspec.schema.json").read_text())
    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as exc:
        raise DocError(f"{block.where}: the job spec does not match core/schemas/jobspec.schema.json: {exc.message}") from None


#: stand-ins for files a reader brings, by name (none left: the README makes its CLIP bundle itself)
FIXTURES: dict[str, Callable[[Path], None]] = {}


@dataclass
class Session:
    """One folder, one shell state, one server: the reader's terminal."""

    root: Path
    port: int
    ran: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    skipped: list[Block] = field(default_factory=list)
    servers: list[subprocess.Popen] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per page and per block (``page:line``)

    def __post_init__(self) -> None:
        self.meta = self.root / ".doc-test"
        self.meta.mkdir(parents=True, exist_ok=True)
        (self.meta / ".curlrc").write_text("fail-with-body\n")
        self.state = self.meta / "env.sh"
        self.venv_bin = Path(sys.executable).parent
        if not (self.venv_bin / "neurflow").exists():
            raise DocError(f"no neurflow command next to {sys.executable}; install the project (make venv)")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("NEURFLOW_", "VIRTUAL_ENV"))}
        # Two busy shared cores: one torch thread per process is faster than two spin-waiting ones.
        base.update({"CURL_HOME": str(self.meta), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                     "TRANSFORMERS_OFFLINE": "1"})
        self.plain_env = {**base, "PATH": os.pathsep.join(
            p for p in base.get("PATH", "").split(os.pathsep) if Path(p) != self.venv_bin)}
        self.env = {**self.plain_env, "PATH": f"{self.venv_bin}{os.pathsep}{self.plain_env['PATH']}",
                    "VIRTUAL_ENV": str(self.venv_bin.parent)}

    # -- pages ---------------------------------------------------------------------------------
    def run_page(self, path: Path) -> None:
        page = str(path.relative_to(REPO))
        if page != FIRST and FIRST not in self.ran:
            self.run_page(REPO / FIRST)
        if FIRST in self.failed and page != FIRST:
            raise AssertionError(f"{page}: not run, its examples build on {FIRST}'s, which failed (see that test)")
        if page in self.ran:
            return
        self.ran.add(page)
        started = time.monotonic()
        try:
            for block in parse(path):
                check_block(block)
                clock = time.monotonic()
                self.run_block(block)
                self.seconds[block.where] = time.monotonic() - clock
        except BaseException:
            self.failed.add(page)
            raise
        self.seconds[page] = time.monotonic() - started

    def run_block(self, block: Block) -> None:
        if block.kind == "skip":
            self.skipped.append(block)
            return
        if block.kind == "fixture":
            target = self.root / block.name
            if not target.exists():
                FIXTURES[block.name](target)
        if block.lang in DATA_LANGS | TEXT_LANGS:
            if block.kind == "file":
                (self.root / block.name).write_text(block.text)
            return
        if block.lang == "python":
            script = self.meta / f"block-{block.page.replace('/', '-')}-{block.line}.py"
            script.write_text(block.text)
            self._check(block, subprocess.run([sys.executable, str(script)], cwd=self.root, env=self.env,
                                              capture_output=True, text=True, timeout=600))
        elif block.kind == "background":
            self._start(block)
        elif block.kind == "in-repo":
            self._check(block, subprocess.run(["bash", "-c", "set -euo pipefail\n" + self._text(block)], cwd=REPO,
                                              env=self.plain_env, capture_output=True, text=True, timeout=600))
        else:
            # allexport: every variable a block sets reaches the next block, as in one terminal
            script = (f"set -euo pipefail -a\n[ -f {self.state} ] && . {self.state}\ncd {self.root}\n"
                      f"{self._text(block)}\nexport -p > {self.state}\n")
            self._check(block, subprocess.run(["bash", "-c", script], cwd=self.root, env=self.env,
                                              capture_output=True, text=True, timeout=600))

    # -- helpers -------------------------------------------------------------------------------
    def _text(self, block: Block) -> str:
        return (block.text.replace(f"127.0.0.1:{DOC_PORT}", f"127.0.0.1:{self.port}")
                .replace(f"localhost:{DOC_PORT}", f"localhost:{self.port}")
                .replace(f"--port {DOC_PORT}", f"--port {self.port}"))

    def _check(self, block: Block, done: subprocess.CompletedProcess) -> None:
        failed = done.returncode != 0
        if failed != (block.kind == "fails"):
            expectation = "exit non-zero" if block.kind == "fails" else "succeed"
            out = (done.stdout + done.stderr)[-4000:]
            raise AssertionError(f"{block.where}: the {block.lang} example did not {expectation} "
                                 f"(exit {done.returncode})\n--- example ---\n{block.text}--- output ---\n{out}")
        if block.kind == "fails":
            out = done.stdout + done.stderr
            # a clear error: the CLI's one line ("neurflow X: error: ...") or an API problem document
            if "Traceback" in out or not re.search(r"neurflow [\w-]+: error: |\"detail\"", out):
                raise AssertionError(f"{block.where}: the example should show a clear error, got:\n{out[-4000:]}")

    def _start(self, block: Block) -> None:
        from neurflow.client.process import NotReady, wait_healthy

        log = open(self.meta / f"background-{len(self.servers)}.log", "wb")
        script = f"[ -f {self.state} ] && . {self.state}\ncd {self.root}\nexec {self._text(block).strip()}\n"
        proc = subprocess.Popen(["bash", "-c", script], cwd=self.root, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.servers.append(proc)
        try:
            wait_healthy(f"http://127.0.0.1:{self.port}", proc, timeout=180, interval=0.3)
        except NotReady as exc:
            tail = (self.meta / f"background-{len(self.servers) - 1}.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{block.where}: {exc}\n--- example ---\n{block.text}--- log ---\n{tail}") from None

    def close(self) -> None:
        from neurflow.client.process import stop_process

        for proc in self.servers:
            stop_process(proc, grace=20, group=True)


# -- links ---------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def bad_links(path: Path) -> list[str]:
    """Links that leave the repository, point at nothing, or name a missing anchor."""
    problems = []
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    page = path.relative_to(REPO)
    for match in LINK.finditer(text):
        target = match.group("target")
        if re.match(r"https?://", target):
            continue
        if re.match(r"\w+:", target):
            problems.append(f"{page}: {target}: only repository files and web pages may be linked")
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if REPO not in resolved.parents and resolved != REPO:
            problems.append(f"{page}: {target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{page}: {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{page}: {target}: no heading with anchor #{anchor}")
    return problems


def inventory() -> list[str]:
    """One line per page: blocks run, data/text blocks, skips with their reasons."""
    lines = []
    for path in pages():
        blocks = parse(path)
        run = [b for b in blocks if b.lang in SHELL_LANGS | {"python"} and b.kind != "skip"]
        data = [b for b in blocks if b.lang in DATA_LANGS]
        lines.append(f"{path.relative_to(REPO)}: {len(run)} run, {len(data)} data, "
                     f"{sum(b.lang in TEXT_LANGS for b in blocks)} text, {sum(b.kind == 'skip' for b in blocks)} skipped")
        lines.extend(f"  skipped {b.where}: {b.reason}" for b in blocks if b.kind == "skip")
    return lines


if __name__ == "__main__":
    print("\n".join(inventory()))

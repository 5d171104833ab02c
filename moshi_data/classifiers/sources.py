"""Read training documents from the sources named in config (local files, globs, s3://, gs://, https://).

A source is a mapping ``{path, format, ...options}``; every reader yields plain-text documents.
Remote paths and globs go through Beam FileSystems, local ones through ``glob``.
"""
from __future__ import annotations

import bz2
import csv
import fnmatch
import glob
import gzip
import hashlib
import html
import io
import json
import re
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from moshi_data.pipeline.config import REPO_ROOT

_TAG = re.compile(r"<[^>]+>")
_BLOCK_END = re.compile(r"</(p|li|h[1-6]|pre|blockquote|div)>|<br\s*/?>", re.IGNORECASE)
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z@]+\*?(\[[^\]]*\])?")
_WIKITEXT_JOINERS = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}
_WIKITEXT_HEADING = re.compile(r"^\s*(?:= )+(.*?)(?: =)+\s*$")
_WIKITEXT_UNK = re.compile(r"<unk>")
_WIKITEXT_CLITIC = re.compile(r" ('s|'re|'ve|'ll|'d|'m|n't|')(?=\s|$)")
_WIKITEXT_BEFORE = re.compile(r" ([,.;:!?%)\]}])")
_WIKITEXT_AFTER = re.compile(r"([(\[{$]) ")
_WIKITEXT_SPACES = re.compile(r"[ \t]+")
_PAGE = re.compile(r"<page>(.*?)</page>", re.DOTALL)
_PAGE_NS = re.compile(r"<ns>([^<]*)</ns>")
_PAGE_TITLE = re.compile(r"<title>([^<]*)</title>")
_PAGE_TEXT = re.compile(r"<text[^>]*>(.*?)</text>", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
# MediaWiki markup, innermost first: {{w|target|shown}} links of Wikinews, other templates, files,
# [[target|shown]] links, bold/italic quotes, references, HTML tags, table rows.
_WIKI_RULES = [
    (re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>|<!--.*?-->", re.DOTALL), ""),
    (re.compile(r"\{\{w\|(?:[^{}|]*\|)?([^{}|]*)\}\}"), r"\1"),
    (re.compile(r"\{\{[^{}]*\}\}"), ""),
    (re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]", re.IGNORECASE), ""),
    (re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]|]*)\]\]"), r"\1"),
    (re.compile(r"\[https?://\S+ ([^\]]*)\]"), r"\1"),
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"<[^>]+>"), ""),
    (re.compile(r"^\s*[{|!].*$", re.MULTILINE), ""),
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.MULTILINE), r"\1"),
]


def resolve_root(root: str | None) -> Path:
    """A data root given relative to the repo (``../shared/data``) or absolute."""
    path = Path(root or ".")
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def expand_paths(pattern: str, root: Path) -> list[str]:
    """Sorted files matching a path or glob; raises when nothing matches (a typo must not train silently)."""
    if "://" in pattern:
        from apache_beam.io.filesystems import FileSystems

        matched = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    else:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        matched = sorted(p for p in glob.glob(full, recursive=True) if Path(p).is_file())
    if not matched:
        raise FileNotFoundError(f"no file matches source path {pattern!r} (root {root})")
    return matched


def read_bytes(path: str, decompress: bool = True) -> bytes:
    """Whole file content (decompressing .gz unless ``decompress`` is False)."""
    if "://" in path:
        from apache_beam.io.filesystems import CompressionTypes, FileSystems

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = handle.read()
    else:
        data = Path(path).read_bytes()
    if decompress and path.endswith(".gz") and data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if decompress and path.endswith(".bz2") and data[:3] == b"BZh":
        return bz2.decompress(data)
    return data


def decode(data: bytes) -> str:
    return data.decode("utf-8-sig", errors="replace")


def html_to_text(markup: str) -> str:
    """Block-level HTML to lines of plain text."""
    return html.unescape(_TAG.sub("", _BLOCK_END.sub("\n", markup)))


def strip_mediawiki(markup: str) -> str:
    """Plain text of MediaWiki markup (templates, files, tables and references dropped; links kept as text)."""
    text = markup
    for pattern, replacement in _WIKI_RULES[:3]:
        previous = None
        while previous != text:  # nested templates: strip innermost first until nothing changes
            previous, text = text, pattern.sub(replacement, text)
    for pattern, replacement in _WIKI_RULES[3:]:
        text = pattern.sub(replacement, text)
    return html.unescape(text)


def gutenberg_body(text: str) -> str:
    """The book between Project Gutenberg's START/END markers (the licence text is the same in every book)."""
    start, end = _GUTENBERG_START.search(text), _GUTENBERG_END.search(text)
    return text[start.end() if start else 0 : end.start() if end else len(text)]


def unwrap_paragraphs(text: str) -> str:
    """Hard-wrapped text (Gutenberg books, Reuters bodies) to one line per paragraph, like web text: a line
    joins the previous one unless either is blank or it starts indented (a new paragraph)."""
    out: list[str] = []
    for line in text.split("\n"):
        if out and line.strip() and out[-1].strip() and not line[:1].isspace():
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        else:
            out.append(line.strip())
    return "\n".join(out)


def split_documents(text: str, source: Mapping[str, Any]) -> Iterator[str]:
    """One file cut into documents before every line matching ``split`` (a regex), e.g. article headings."""
    if not source.get("split"):
        yield text
        return
    heading = re.compile(source["split"])
    current: list[str] = []
    for line in text.split("\n"):
        if heading.match(line) and any(part.strip() for part in current):
            yield "\n".join(current)
            current = []
        current.append(line)
    if any(part.strip() for part in current):
        yield "\n".join(current)


def _text(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    text = decode(data).replace("\r\n", "\n")
    text = gutenberg_body(text) if source.get("gutenberg") else text
    yield from split_documents(unwrap_paragraphs(text) if source.get("unwrap") else text, source)


def detokenize_wikitext(text: str) -> str:
    """WikiText's tokenized article back to plain Wikipedia text: ``= = Heading = =`` lines become the
    heading, no space before closing punctuation or after opening brackets, clitics joined ("it 's" ->
    "it's"), double quotes paired ("a " b " c" -> "a "b" c"), ``<unk>`` tokens dropped."""
    lines = []
    for line in text.split("\n"):
        heading = _WIKITEXT_HEADING.match(line)
        line = heading.group(1) if heading else line
        parts = f" {_WIKITEXT_UNK.sub('', line)} ".split(' " ')
        line = "".join(part + ((' "' if i % 2 == 0 else '" ') if i < len(parts) - 1 else "") for i, part in enumerate(parts))
        line = _WIKITEXT_CLITIC.sub(r"\1", line)
        line = _WIKITEXT_BEFORE.sub(r"\1", line)
        line = _WIKITEXT_AFTER.sub(r"\1", line)
        lines.append(_WIKITEXT_SPACES.sub(" ", line).strip())
    return "\n".join(lines)


def _wikitext(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """WikiText-2/103 (one document per ``split`` match); ``@-@``-style joiners undone; ``detokenize:
    true`` also undoes the rest of its tokenization (:func:`detokenize_wikitext`)."""
    text = decode(data).replace("\r\n", "\n")
    for token, joined in _WIKITEXT_JOINERS.items():
        text = text.replace(token, joined)
    for document in split_documents(text, source):
        yield detokenize_wikitext(document) if source.get("detokenize") else document


def _field_text(record: Mapping[str, Any], fields, joiner: str) -> str:
    """Named fields of a record, joined by newlines; a list field is joined by ``joiner``."""
    parts = []
    for field in fields:
        value = record.get(field)
        if isinstance(value, list):
            value = joiner.join(item for item in value if isinstance(item, str))
        if isinstance(value, str) and value.strip():
            parts.append(value)
    return "\n".join(parts)


def _csv(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """One document per row: ``fields`` of the header row, or of ``columns`` (names) for a file without one."""
    csv.field_size_limit(1 << 26)
    for record in csv.DictReader(io.StringIO(decode(data)), fieldnames=source.get("columns")):
        text = _field_text(record, source.get("fields") or ["text"], "\n")
        if text:
            yield text


def _sgml_records(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """Records ``<record ...>...</record>`` of an SGML file (Reuters-21578): the text of ``fields`` tags."""
    text = decode(data) if source.get("encoding", "utf-8") == "utf-8" else data.decode(source["encoding"])
    record_tag = source["record"]
    for body in re.findall(rf"<{record_tag}[\s>].*?</{record_tag}>", text, re.DOTALL):
        parts = []
        for field in source["fields"]:
            match = re.search(rf"<{field}>(.*?)</{field}>", body, re.DOTALL)
            if match:
                part = _CONTROL.sub("", html.unescape(match.group(1))).strip()
                parts.append(unwrap_paragraphs(part) if source.get("unwrap") else part)
        if any(parts):
            yield "\n".join(part for part in parts if part)


def _mediawiki_xml(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """Main-namespace pages of a MediaWiki XML export: title + article text without markup. Read by
    tags, not by an XML parser: some exports in the wild carry unescaped ``&`` in the text."""
    for page in _PAGE.findall(decode(data)):
        ns, title, markup = _PAGE_NS.search(page), _PAGE_TITLE.search(page), _PAGE_TEXT.search(page)
        if (ns and ns.group(1).strip() != "0") or "<redirect" in page or not markup:
            continue
        body = strip_mediawiki(html.unescape(markup.group(1)))
        if body.strip():
            yield "\n".join(part for part in [html.unescape(title.group(1)) if title else "", body] if part)


def _jats_xml(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """A PubMed Central JATS article: its title and the paragraphs of abstract and body."""
    root = ElementTree.fromstring(data)
    title = root.find(".//article-title")
    parts = ["".join(title.itertext()).strip()] if title is not None else []
    for section in (root.find(".//abstract"), root.find(".//body")):
        if section is not None:
            parts += [" ".join("".join(p.itertext()).split()) for p in section.iter("p")]
    text = "\n".join(part for part in parts if part)
    if text:
        yield text


def _s2orc_json(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """An S2ORC doc2json paper: abstract and body paragraphs of its GROBID parse."""
    record = json.loads(decode(data))
    parse = record.get("grobid_parse") or record.get("latex_parse") or {}
    paragraphs = [item.get("text", "") for key in ("abstract", "body_text") for item in parse.get(key) or []]
    text = "\n".join(p.strip() for p in paragraphs if p.strip())
    if text:
        yield text


def _json_values(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """A JSON object of records (``{id: {field: ...}}``): the named fields of each record, in key order."""
    records = json.loads(decode(data))
    for key in sorted(records):
        text = _field_text(records[key], source.get("fields") or ["text"], "\n")
        if text:
            yield text


def _latex(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    lines = []
    for line in decode(data).split("\n"):
        line = line.split("%", 1)[0] if not line.lstrip().startswith("\\%") else line
        line = _LATEX_COMMAND.sub("", line).replace("{", "").replace("}", "").replace("~", " ")
        lines.append(line)
    yield "\n".join(lines)


def _dotted(record: Mapping[str, Any], name: str) -> Any:
    """``record["a"]["b"]`` for ``name`` "a.b" (None when a key is missing)."""
    value: Any = record
    for key in name.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _jsonl(data: bytes, source: Mapping[str, Any]) -> Iterator[str | None]:
    """One document per record: ``fields`` joined by newlines (list fields by ``join``, default newline);
    ``markup: mediawiki`` strips wiki markup; ``exclude_url: REGEX`` (with ``url_field``, default
    ``metadata.url``) skips a record whose URL matches. A document's index is its record's (empty and
    excluded records yield None), so ids name records."""
    fields = source.get("fields") or ["text"]
    joiner = source.get("join", "\n")
    exclude = re.compile(source["exclude_url"], re.IGNORECASE) if source.get("exclude_url") else None
    url_field = source.get("url_field", "metadata.url")
    for raw in decode(data).split("\n"):
        if not raw.strip():
            continue
        record = json.loads(raw)
        if exclude is not None and exclude.search(str(_dotted(record, url_field) or "")):
            yield None
            continue
        text = _field_text(record, fields, joiner)
        if source.get("markup") == "mediawiki":
            text = strip_mediawiki(text)
        yield text if text.strip() else None  # None: skipped, the record keeps its index (document id)


def _zip(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    patterns = source.get("members") or ["*"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            if not name.endswith("/") and any(fnmatch.fnmatch(name, p) for p in patterns):
                yield decode(archive.read(name))


def _stackexchange_posts(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    root = ElementTree.fromstring(data)
    for row in root.iter("row"):
        parts = [row.get("Title") or "", html_to_text(row.get("Body") or "")]
        text = "\n".join(part for part in parts if part.strip())
        if text:
            yield text


def _medquad(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    root = ElementTree.fromstring(data)
    for pair in root.iter("QAPair"):
        parts = [(pair.findtext("Question") or ""), (pair.findtext("Answer") or "")]
        text = "\n".join(part.strip() for part in parts if part.strip())
        if text:
            yield text


def _wet(data: bytes, source: Mapping[str, Any]) -> Iterator[str]:
    """Documents of a WET file (plain or gzipped), parsed by the text job's reader; its rejects
    (corrupt or truncated records) are skipped here, the text job counts them."""
    from moshi_data.pipeline.config import load_config
    from moshi_data.pipeline.text.document import Document
    from moshi_data.pipeline.text.wet import FileReport, WetLimits, read_wet

    limits = WetLimits.from_config(load_config("text_corpus")["wet"])
    name = str(source["path"])
    for item in read_wet(io.BytesIO(data), name, 0, limits, FileReport(name, 0)):
        if isinstance(item, Document):
            yield item.text


READERS: dict[str, Callable[[bytes, Mapping[str, Any]], Iterator[str]]] = {
    "text": _text,
    "wikitext": _wikitext,
    "latex": _latex,
    "jsonl": _jsonl,
    "csv": _csv,
    "sgml_records": _sgml_records,
    "mediawiki_xml": _mediawiki_xml,
    "jats_xml": _jats_xml,
    "s2orc_json": _s2orc_json,
    "json_values": _json_values,
    "zip": _zip,
    "stackexchange_posts": _stackexchange_posts,
    "medquad": _medquad,
    "wet": _wet,
}


def iter_documents(source: Mapping[str, Any], root: Path) -> Iterator[str]:
    """Every document of one source, in a stable order."""
    for _, text in iter_identified_documents(source, root):
        yield text


def iter_identified_documents(source: Mapping[str, Any], root: Path) -> Iterator[tuple[str, str]]:
    """``(document id, text)`` of every document of one source; the id is ``<file name>#<index in file>``
    (stable across machines: the file's path relative to ``root`` when below it)."""
    reader = READERS.get(source.get("format", "text"))
    if reader is None:
        raise ValueError(f"unknown source format {source.get('format')!r}; known: {sorted(READERS)}")
    keep_language = language_filter(source.get("languages"))
    for path in expand_paths(source["path"], root):
        name = _relative_name(path, root)
        for index, text in enumerate(reader(read_bytes(path, decompress=reader is not _wet), source)):
            if text is not None and keep_language(text):
                yield f"{name}#{index}", text


def language_filter(languages) -> Callable[[str], bool]:
    """``languages: [en]`` on a source keeps the documents the text job's LID stage would keep (its
    model and threshold, configs/text_corpus.yaml), so a per-language model learns that language."""
    if not languages:
        return lambda text: True
    from moshi_data.pipeline.config import load_config
    from moshi_data.pipeline.text.langid import LanguageIdStage

    stage = LanguageIdStage({**load_config("text_corpus")["language"], "languages": list(languages)})
    stage.setup()

    def keep(text: str) -> bool:
        language, score = stage.predict(" ".join(line for line in text.split("\n") if line.strip()))
        return language in stage.languages and score >= stage.threshold

    return keep


def _relative_name(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def sources_identity(sources: list[Mapping[str, Any]], root: Path) -> list[list[str]]:
    """Content digests of every file of the sources (part of a model's cache key)."""
    identity = []
    for source in sources:
        for path in expand_paths(source["path"], root):
            digest = hashlib.sha256(read_bytes(path, decompress=False)).hexdigest()[:16]
            identity.append([json.dumps(dict(source), sort_keys=True), Path(path).name, digest])
    return identity

"""Citations of the design document point at sections that exist.

Docstrings, comments, docs and the README cite `docs/design.md` by section ("docs/design.md
§3.6"); the internal design notes the code once cited ("DESIGN.md") are not in the repository.
A renumbered or removed section, or a citation of the old file, fails here.
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "docs", "design.md")
# What a user reads: the package, the docs, the examples, the launch scripts, the configs, the
# benchmarks and the README.
SCANNED = ("unlearn_jax", "docs", "examples", "launch", "configs", "benchmarks", "README.md")
TEXT_SUFFIXES = (".py", ".md", ".sh", ".txt", ".cfg", ".toml")

HEADING = re.compile(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
# A section token: "3", "3.6", and also "2b" (so that a letter-suffixed number fails).
SECTION = r"§\s*([0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)"
# "design.md §3.1", "design.md §3.1, §3.3", "design.md §3.1 to §3.3", "[design.md §5](...)".
CITATION = re.compile(
    r"design\.md\]?\)?\s*((?:" + SECTION + r"[\s,;–-]*(?:and\s+|to\s+)?)+)")
ANCHOR = re.compile(r"design\.md#([\w-]+)")


def design_text() -> str:
  with open(DESIGN, encoding="utf-8") as f:
    return f.read()


def sections(text: str) -> set[str]:
  """Numbers of the numbered headings ('## 3. Definitions' -> '3', '### 3.6 ...' -> '3.6')."""
  return set(HEADING.findall(text))


def github_anchor(heading: str) -> str:
  """The anchor GitHub gives a markdown heading ('5. Method contract' -> '5-method-contract')."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
  return {github_anchor(line.lstrip("#")) for line in text.splitlines()
          if re.match(r"^#{1,6}\s", line)}


def scanned_files() -> list[str]:
  """Every text file under SCANNED (relative paths)."""
  found = []
  for entry in SCANNED:
    path = os.path.join(ROOT, entry)
    if os.path.isfile(path):
      found.append(entry)
      continue
    for directory, subdirs, files in os.walk(path):
      subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"]
      found.extend(os.path.relpath(os.path.join(directory, name), ROOT) for name in files
                   if name.endswith(TEXT_SUFFIXES))
  return sorted(found)


def read(relative: str) -> str:
  with open(os.path.join(ROOT, relative), encoding="utf-8") as f:
    return f.read()


def cited_sections(text: str) -> list[str]:
  """Every section number cited after 'design.md' in `text`."""
  return [number for match in CITATION.finditer(text)
          for number in re.findall(SECTION, match.group(1))]


def test_citation_pattern_reads_every_form_the_code_uses():
  text = ("Scores (docs/design.md §3.5): ... (docs/design.md §3.1, §3.3) ... docs/design.md §3.1 "
          "to §3.4. [docs/design.md §5](design.md#5-method-contract) ... design.md §2b")
  assert cited_sections(text) == ["3.5", "3.1", "3.3", "3.1", "3.4", "5", "2b"]
  assert ANCHOR.findall(text) == ["5-method-contract"]
  assert github_anchor(" 6.2 `summary.json`: top level") == "62-summaryjson-top-level"


def test_design_sections_are_numbered_once_and_in_order():
  numbers = HEADING.findall(design_text())
  assert numbers, "docs/design.md has no numbered section"
  assert len(numbers) == len(set(numbers)), f"repeated section numbers: {numbers}"
  keys = [tuple(int(part) for part in number.split(".")) for number in numbers]
  assert keys == sorted(keys), f"sections out of order: {numbers}"
  for key in keys:  # 3.6 needs a 3
    assert len(key) == 1 or key[:-1] in keys, f"§{'.'.join(map(str, key))} has no parent"


def test_design_cross_references_exist():
  text = design_text()
  missing = sorted(set(re.findall(SECTION, text)) - sections(text))
  assert not missing, f"docs/design.md refers to sections it lacks: {missing}"


def test_no_file_cites_the_old_design_notes():
  lines = [f"{relative}:{number}: {line.strip()}" for relative in scanned_files()
           for number, line in enumerate(read(relative).splitlines(), 1) if "DESIGN.md" in line]
  assert not lines, "cite docs/design.md §<n> instead of DESIGN.md:\n" + "\n".join(lines)


def test_every_cited_section_exists():
  text = design_text()
  known, known_anchors = sections(text), anchors(text)
  problems, citations = [], 0
  for relative in scanned_files():
    content = read(relative)
    cited = cited_sections(content)
    citations += len(cited)
    problems += [f"{relative}: §{n}" for n in cited if n not in known]
    problems += [f"{relative}: design.md#{a}" for a in ANCHOR.findall(content)
                 if a not in known_anchors]
  assert citations, "no file cites docs/design.md: the citation pattern no longer matches"
  assert not problems, "citations of sections docs/design.md lacks:\n" + "\n".join(problems)

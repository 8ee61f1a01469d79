#!/usr/bin/python3
"""Writes docs/job-spec.md, the job spec reference, from proto/mfpo_job.proto.

Every field of the spec is documented where it is declared (the proto's comments); this script
turns them into one table per section so that the reference cannot drift from the schema.

    /usr/bin/python3 scripts/spec-reference.py           # rewrite docs/job-spec.md
    /usr/bin/python3 scripts/spec-reference.py --check   # exit 1 when it is out of date (a test)
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "mfpo_job.proto"
DOC = ROOT / "docs" / "job-spec.md"

HEADER = """# Job spec reference

<!-- Written by scripts/spec-reference.py from proto/mfpo_job.proto: edit the proto's comments,
     then run `/usr/bin/python3 scripts/spec-reference.py` (the test `job_spec_reference` checks). -->

A job spec is a YAML (or JSON) file that `mfpo train --spec FILE` runs on one machine and
`mfpoctl submit FILE` sends to the job service. Every field is optional in the file; the defaults
below are filled in before the job starts (`mfpoctl get ID --json` shows the completed spec).
Unknown keys, anchors, aliases and duplicate keys are refused with the field's path. Relative
paths are relative to the directory the command runs in (`mfpoctl` makes them absolute; the
service only accepts paths under its `--roots`).

Examples: `docs/examples/*.yaml` (`service-job.yaml` for the service). A run resumed in the same
`output_dir` (`mfpo train` again, or the service after a failure) may change only `name`,
`output_dir`, `evaluation`, `checkpoint.keep_last`, `checkpoint.every_steps`, `resources.threads`,
`resources.workers`, `resources.min_workers`, `resources.max_restarts`,
`resources.collective_timeout_s`, `optimizer.grad_accum` and `optimizer.shard_state` (as long as
`resources.workers` x `optimizer.grad_accum`, the global batch, stays); any other difference is
refused with the list of differences (worker/trainer.cc, `MayChangeOnResume`).
"""

SECTIONS = [  # (message, key in the file)
    ("JobSpec", None),
    ("ModelSpec", "model"),
    ("DataSpec", "data"),
    ("ObjectiveSpec", "objective"),
    ("OptimizerSpec", "optimizer"),
    ("LoraSpec", "optimizer.lora"),
    ("CurriculumSpec", "curriculum"),
    ("DatagenSpec", "datagen"),
    ("EvaluationSpec", "evaluation"),
    ("CheckpointSpec", "checkpoint"),
    ("ResourcesSpec", "resources"),
]

FIELD = re.compile(r"^\s*(optional\s+|repeated\s+)?(\w+)\s+(\w+)\s*=\s*\d+\s*;\s*(?://\s*(.*))?$")


def parse(text):
    """{message: [(key, type, doc)]} with the comments above and beside each field."""
    messages, current, pending = {}, None, []
    for line in text.splitlines():
        stripped = line.strip()
        m = re.match(r"^message (\w+) \{", stripped)
        if m:
            current, pending = m.group(1), []
            messages[current] = []
            continue
        if stripped == "}":
            current, pending = None, []
            continue
        if current is None:
            continue
        if stripped.startswith("//"):
            pending.append(stripped[2:].strip())
            continue
        f = FIELD.match(line)
        if f:
            label, ftype, name, trailing = f.groups()
            doc = " ".join(pending + ([trailing] if trailing else []))
            if label and label.strip() == "repeated":
                ftype = f"list of {ftype}"
            messages[current].append((name, ftype, doc))
            pending = []
    return messages


def cell(text):
    return text.replace("|", "\\|")


def render(messages):
    out = [HEADER]
    for message, key in SECTIONS:
        fields = messages[message]
        out.append(f"\n## `{key}`\n" if key else "\n## Top level\n")
        out.append("| key | type | meaning and default |\n|---|---|---|")
        for name, ftype, doc in fields:
            if ftype in dict(SECTIONS):
                if message == "JobSpec":
                    continue  # the sections have their own tables
                doc = f"{doc} Its keys: the section `{key}.{name}` below."
            full = f"{key}.{name}" if key else name
            out.append(f"| `{full}` | {ftype} | {cell(doc)} |")
    return "\n".join(out) + "\n"


def main():
    messages = parse(PROTO.read_text())
    missing = [m for m, _ in SECTIONS if m not in messages]
    if missing:
        sys.exit(f"spec-reference.py: {PROTO} has no message {', '.join(missing)}")
    text = render(messages)
    if sys.argv[1:] == ["--check"]:
        if not DOC.exists() or DOC.read_text() != text:
            sys.exit(f"{DOC} is out of date with {PROTO}: run /usr/bin/python3 scripts/spec-reference.py")
        print(f"{DOC} is current")
        return
    if sys.argv[1:]:
        sys.exit("usage: spec-reference.py [--check]")
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()

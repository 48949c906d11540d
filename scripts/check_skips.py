#!/usr/bin/python3
"""Fails when a test was skipped without a stated, allowed reason.

    scripts/check_skips.py --stage STAGE JUNIT.xml [--allow tests/allowed_skips.txt]

JUNIT.xml is what `ctest --output-junit JUNIT.xml` writes (CMake >= 3.21). ctest marks a test
"notrun" (prints `***Skipped` and lists it under "The following tests did not run") when
  * a GoogleTest test called GTEST_SKIP(): gtest_discover_tests gives every test the property
    SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" (CMake 3.25, GoogleTestAddTests.cmake), and the
    JUnit entry says <skipped message="SKIP_REGULAR_EXPRESSION_MATCHED"/>;
  * a script test exited with its SKIP_RETURN_CODE (77 for tests/notebooks_test.sh);
  * or it was disabled (status "disabled").
Each such test must match a line of the allow-list for this STAGE:

    STAGE | TEST-GLOB | TEXT THE SKIP MESSAGE MUST CONTAIN | WHY THIS SKIP IS ACCEPTABLE

(STAGE: `ctest` for scripts/test.sh stage 1, `sanitize` for stage 2, or `*`; TEST-GLOB: an
fnmatch pattern of the ctest name; lines starting with '#' are comments.) The skip message is GoogleTest's
text after "...: Skipped" (the GTEST_SKIP() << message), or a script's "SKIPPED: ..." line.
A skip that matches no line, or matches a test but not its required text (skipped for another
reason), fails. Prints every skipped test with its message and verdict, then one summary line.
Exit status 0 if every skip is allowed, 1 if not, 2 if the JUnit file is missing or unreadable.
"""
import argparse
import fnmatch
import os
import re
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_allow_list(path):
    rules = []
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split("|")]
            if len(parts) != 4 or not all(parts):
                sys.exit(f"{path}:{n}: expected 'STAGE | TEST-GLOB | MESSAGE TEXT | REASON', got: {raw.rstrip()}")
            rules.append(dict(zip(("stage", "glob", "text", "reason"), parts), line=n))
    return rules


def skip_message(out, junit_message):
    """The reason the test gave for skipping, from its output."""
    # GoogleTest: "file.cpp:LINE: Skipped\nMESSAGE...\n[  SKIPPED ] Name (N ms)"
    m = re.search(r": Skipped\n(.*?)\n?\[  SKIPPED \]", out, re.S)
    if m:
        return " ".join(m.group(1).split()) or "(GTEST_SKIP() without a message)"
    m = re.search(r"^SKIPPED:?\s*(.*)$", out, re.M)  # tests/notebooks_test.sh
    if m:
        return m.group(1).strip()
    return f"(no message; ctest: {junit_message})"


def main():
    ap = argparse.ArgumentParser(description="Fails on skipped tests that are not in the allow-list.")
    ap.add_argument("junit", help="ctest --output-junit file")
    ap.add_argument("--stage", required=True, help="the stage name used in the allow-list (ctest, sanitize)")
    ap.add_argument("--allow", default=os.path.join(ROOT, "tests", "allowed_skips.txt"), help="the allow-list")
    args = ap.parse_args()
    try:
        cases = ET.parse(args.junit).getroot().iter("testcase")
    except (OSError, ET.ParseError) as e:
        print(f"skip check ({args.stage}): FAILED: cannot read ctest's JUnit file {args.junit}: {e}")
        return 2
    rules = read_allow_list(args.allow)
    total, skipped, bad = 0, [], 0
    for case in cases:
        total += 1
        status = case.get("status", "")
        if status not in ("notrun", "disabled"):
            continue
        name = case.get("name", "?")
        sk = case.find("skipped")
        jmsg = sk.get("message", "") if sk is not None else status
        out = case.findtext("system-out") or ""
        msg = skip_message(out, jmsg)
        verdict, why = "NOT ALLOWED", "no line of the allow-list names this test for this stage"
        for r in rules:
            if r["stage"] not in (args.stage, "*") or not fnmatch.fnmatchcase(name, r["glob"]):
                continue
            if r["text"] in msg:
                verdict, why = "allowed", f"{r['reason']} (allow-list line {r['line']})"
                break
            why = f"allow-list line {r['line']} expects a message containing '{r['text']}'"
        bad += verdict != "allowed"
        skipped.append((name, msg, verdict, why))
    for name, msg, verdict, why in skipped:
        print(f"  {verdict:11s} {name}: skipped: {msg}")
        print(f"  {'':11s} -> {why}")
    print(f"skip check ({args.stage}): {len(skipped)} of {total} tests skipped, "
          f"{len(skipped) - bad} allowed, {bad} not allowed"
          f"{' -- FAILED' if bad else ''} (allow-list: {os.path.relpath(args.allow, ROOT)})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Rewrites the `## tdyn CMD --help` blocks of docs/CLI.md from the program itself.

    scripts/cli_docs.py [build/tdyn]

tests/run_test.cpp Cli.DocsShowTheSameHelpAsTheProgram fails when they differ; run this after
changing a flag or its help text, then read the diff."""
import os
import re
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tdyn = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "tdyn")
path = os.path.join(root, "docs", "CLI.md")
doc = open(path).read()


def block(match):
    cmd = match.group(1).strip()
    out = subprocess.run([tdyn] + cmd.split() + ["--help"], capture_output=True, text=True, check=True).stdout
    return f"## tdyn {match.group(1)}--help\n\n```\n{out.replace(tdyn, 'tdyn')}```\n"


new = re.sub(r"## tdyn ([a-z]* ?)--help\n\n```\n.*?```\n", block, doc, flags=re.S)
open(path, "w").write(new)
print("docs/CLI.md: help blocks", "updated" if new != doc else "unchanged")

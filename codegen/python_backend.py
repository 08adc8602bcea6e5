"""Python export: `score.py`, m2cgen's Python code with `score(input) -> probability`.

It is code we generated (loaded with importlib from the file, never unpickled). The module also
defines `score_batch(rows)` so callers make one Python call per batch.
"""
from __future__ import annotations

from pathlib import Path

from m2cgen.interpreters import PythonInterpreter

BATCH_FUNCTION = '''

def score_batch(rows):
    """Positive-class probability of every row (an iterable of float sequences)."""
    return [score(row) for row in rows]
'''


def write_python_source(prob_ast, out_path: Path, header: str) -> None:
    """Write `score.py` computing the probability AST."""
    code = PythonInterpreter(function_name="score").interpret(prob_ast)
    Path(out_path).write_text(f'"""{header}"""\n{code}{BATCH_FUNCTION}')

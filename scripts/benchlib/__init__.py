"""The code of scripts/bench: minicpmv (ours) against llama.cpp's llama-mtmd-cli (theirs).

scripts/bench is only the entry point; `cli.main` runs the steps. The modules, in the order a
bench run uses them:

    cli       command line, and main() as a list of named steps
    config    configurations (VERSION:TEXT:MMPROJ) and model file names
    models    finding or making the model files (synth, quantize)
    weights   bytes read per generated token, from `minicpmv inspect --json`
    image     the deterministic test PNG
    machine   machine facts and the memory-bandwidth probe (scripts/membw.c)
    measure   running one process under /usr/bin/time -v
    ours      our side: argv of `minicpmv run --json` and parsing its output
    theirs    their side: argv of llama-mtmd-cli and parsing its log
    runs      the run series: warm-ups, counterbalanced A/B pairs, --max-slices sweep, --low-mem
    stats     medians, per-pair ratios and their intervals, number formatting
    summary   everything measured, in one result dict (results.json)
    svg       hand-written SVG chart primitives
    plots     the four plots of a result
    report    results.md, and the headline section of docs/BENCHMARKS.md
    util      logging, errors, atomic writes

Tests (standard library only, offline):
    python3 -m unittest discover -s scripts/benchlib/tests -t scripts
"""

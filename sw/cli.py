"""The ``tessera`` command line: generate, lint, bench, demo, config, isa, disasm, sweep."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from ..hw.config import PRESETS, TesseraConfig, TesseraError, preset
from ..hw.generate import TOPS, top_spec, write_outputs
from .check import (
    InputError,
    output_dir,
    output_file,
    positive_number,
    whole_number,
    write_text,
)

__all__ = ["main"]


class UsageError(InputError):
    """Bad command-line input: printed without a traceback, exit status 2."""


def _progress(msg: str) -> None:
    print(f"[tessera] {msg}", file=sys.stderr, flush=True)


def _config(args) -> TesseraConfig:
    if getattr(args, "config", None) is not None:
        return TesseraConfig.from_file(args.config)
    return preset(args.preset)


def _add_config_args(p: argparse.ArgumentParser, default: str | None = "default",
                     required: bool | None = None, why: str = "") -> None:
    g = p.add_mutually_exclusive_group(required=default is None if required is None
                                       else required)
    g.add_argument("--preset", default=default, metavar="NAME",
                   help=f"a named configuration: {', '.join(PRESETS)} (default: "
                        f"{default or why or 'none'})")
    g.add_argument("--config", metavar="FILE", help="a configuration JSON file")


def _write_json(path: str | None, data: dict) -> None:
    if path:
        write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", "--json file")
        _progress(f"wrote {path}")


def _write_outputs(cfg: TesseraConfig, out: Path, top: str) -> dict:
    """:func:`write_outputs` with the output folder checked first and a failed write
    reported as an error naming the folder."""
    output_dir(out, "-o")
    try:
        return write_outputs(cfg, out, top)
    except OSError as e:
        raise UsageError(f"cannot write into {str(out)!r}: {e.strerror or e}") from None


def cmd_config(args) -> int:
    cfg = _config(args)
    if args.json:
        print(cfg.to_json())
        return 0
    print(f"configuration {cfg.hash}: {cfg.describe()}")
    for k, v in cfg.to_dict().items():
        print(f"  {k:18} {v}")
    print("derived:")
    for k in ("macs_per_cycle", "bus_bytes", "spad_row_bytes", "spad_rows", "acc_row_bytes",
              "acc_rows"):
        print(f"  {k:18} {getattr(cfg, k)}")
    return 0


def cmd_generate(args) -> int:
    cfg = _config(args)
    _progress(f"generating {args.top} for {cfg.describe()}...")
    paths = _write_outputs(cfg, Path(args.output), args.top)
    size = paths["verilog"].stat().st_size
    extra = f", {paths['registers']}" if "registers" in paths else ""
    print(f"wrote {paths['verilog']} ({size / 1e6:.1f} MB, module {TOPS[args.top].module}), "
          f"{paths['config']} (hash {cfg.hash}){extra} and {paths['lint']}")
    return 0


def lint(verilog: Path, waivers: Path, module: str) -> subprocess.CompletedProcess:
    """Run ``verilator --lint-only -Wall`` with the waivers on one generated file."""
    from ..sim.toolchain import setup_verilator

    setup_verilator()
    exe = shutil.which("verilator")
    return subprocess.run([exe, "--lint-only", "-Wall", str(waivers), str(verilog),
                           "--top-module", module], capture_output=True, text=True)


def cmd_lint(args) -> int:
    import tempfile

    cfg = _config(args)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_outputs(cfg, Path(tmp), args.top)
        result = lint(paths["verilog"], paths["lint"], TOPS[args.top].module)
    sys.stdout.write(result.stdout + result.stderr)
    if result.returncode == 0:
        print(f"lint clean: {TOPS[args.top].module} for configuration {cfg.hash} "
              f"(verilator -Wall with the waivers of docs/lint.md)")
    return result.returncode


def _print_figures(fig: dict, keys) -> None:
    for k in keys:
        v = fig[k]
        print(f"  {k:22} {v:.4f}" if isinstance(v, float) else f"  {k:22} {v}")


def cmd_bench(args) -> int:
    cfg = _config(args)
    benches = {"array": _bench_array, "dma": _bench_dma, "nonlinear": _bench_nonlinear,
               "gemm": _bench_gemm, "sim": _bench_sim, "model": _bench_model,
               "model-speed": _bench_model_speed}
    if args.target not in benches:
        raise UsageError(f"unknown benchmark {args.target!r}; available: "
                         f"{', '.join(benches)}")
    _check_sims(args)
    from ..sim.runner import QUICK_BUILDS, quick_builds
    if quick_builds():
        print(f"note: ${QUICK_BUILDS} is set: the simulators are quick builds (C++ at -O1), "
              f"so simulated cycles/s are lower than an ordinary build's; cycle counts are "
              f"the same", file=sys.stderr)
    return benches[args.target](cfg, args)


#: What ``--sim`` of each benchmark may name (gemm runs on any runtime backend but uart).
BENCH_SIMS = {"gemm": ("golden", "icarus", "verilator", "amaranth"), "sim": ("verilator",),
              "array": ("icarus", "verilator"), "dma": ("icarus", "verilator"),
              "nonlinear": ("icarus", "verilator"), "model": ("verilator",),
              "model-speed": ("verilator",)}


def _check_sims(args) -> None:
    """``--sim``: a comma-separated list of what the benchmark runs on, each once."""
    allowed = BENCH_SIMS[args.target]
    if args.target == "sim" and args.sim != "verilator":
        raise UsageError("bench sim measures Verilator (native and cocotb harnesses); "
                         "drop --sim")
    sims = args.sim.split(",")
    for sim in sims:
        if sim not in allowed:
            what = (f"--sim {args.sim!r} has an empty name" if not sim else
                    f"unknown simulator {sim!r} for bench {args.target}")
            raise UsageError(f"{what}; give one or more of {', '.join(allowed)}, "
                             f"comma-separated")
    if len(set(sims)) != len(sims):
        raise UsageError(f"--sim {args.sim!r} names a simulator twice")


def _bench_dma(cfg, args) -> int:
    from .bench import bench_dma

    results = {}
    for sim in args.sim.split(","):
        fig = bench_dma(cfg, sim, latency_cycles=args.latency, seed=args.seed,
                        progress=_progress)
        results[sim] = fig
        print(f"DMA benchmark on {sim}: {cfg.describe()}, {fig['bytes']} bytes each way, "
              f"{fig['latency_cycles']}-cycle memory latency, data checked")
        _print_figures(fig, ["read_bytes_per_cycle", "write_bytes_per_cycle",
                             "bus_bytes_per_cycle", "read_fraction_of_peak",
                             "write_fraction_of_peak", "sim_cycles_per_s"])
    _write_json(args.json, results[args.sim.split(",")[0]])
    return 0


def _bench_nonlinear(cfg, args) -> int:
    from .bench import bench_nonlinear
    from .golden.accuracy import render_markdown

    results = {}
    for sim in args.sim.split(","):
        fig = bench_nonlinear(cfg, sim, accuracy=not results, seed=args.seed,
                              progress=_progress)
        results[sim] = fig
        print(f"output-path benchmark on {sim}: {cfg.describe()}, {fig['rows']} rows of "
              f"{fig['row_len']} elements per operation, all results checked against the "
              f"golden model")
        print(f"  {'op':10} {'passes':>6} {'per pass':>9} {'steady':>8} {'end to end':>11} "
              f"{'row cycles':>11} {'latency':>8}   (elements per cycle; {cfg.cols} lanes)")
        for r in fig["ops"]:
            print(f"  {r['op']:10} {r['passes']:6d} {r['pass_elements_per_cycle']:9.2f} "
                  f"{r['steady_elements_per_cycle']:8.2f} {r['elements_per_cycle']:11.2f} "
                  f"{r['row_cycles']:11.1f} {r['latency_cycles']:8d}")
        _print_figures(fig, ["sim_cycles_per_s"])
    first = results[args.sim.split(",")[0]]
    print("\naccuracy of the integer operations (golden model against float64):")
    print(render_markdown(first["accuracy"]), end="")
    _write_json(args.json, first)
    return 0


def _runtime_options(args, backend: str) -> dict:
    """The RTL runtime's options from the command line: the memory model's timing, and a
    waveform window (Verilator only)."""
    opts = {"mem_latency": args.mem_latency, "mem_gap": args.mem_gap}
    if backend == "model":
        # The runners check their outputs: the model computes them as the golden model does.
        opts["model_data"] = True
    faults = _bus_faults(args)
    if faults is not None:
        if backend not in ("verilator", "icarus"):
            raise UsageError("--mem-latency-range and --mem-stall need the verilator or icarus "
                             "backend (the Verilog memory model)")
        if faults.latency and args.mem_latency != 100:
            raise UsageError("give --mem-latency or --mem-latency-range, not both")
        opts["faults"] = faults
    if backend == "uart":
        opts.update(port=args.port, baud=args.baud)
    elif args.port:
        raise UsageError("--port is for the uart backend (a board's serial port)")
    if args.trace is not None:
        if backend != "verilator":
            raise UsageError("--trace needs the verilator backend")
        if not args.trace.endswith(".fst"):
            raise UsageError(f"--trace writes FST: name a .fst file, not {args.trace!r}")
        folder = Path(args.trace).resolve().parent
        if not folder.is_dir():
            raise UsageError(f"--trace: the folder {str(folder)!r} does not exist")
        opts.update(trace=args.trace, trace_from=args.trace_from,
                    trace_cycles=args.trace_cycles)
    return opts


def _bus_faults(args):
    """Random memory timing from ``--mem-latency-range``, ``--mem-stall`` and
    ``--mem-seed`` (a :class:`~tessera.sim.bus_faults.BusFaults`), or None."""
    from ..sim.bus_faults import BusFaults

    if args.mem_latency_range is None and not args.mem_stall:
        if args.mem_seed is not None:
            raise UsageError("--mem-seed seeds --mem-latency-range and --mem-stall; give one")
        return None
    if not 0 <= args.mem_stall < 1:
        raise UsageError(f"--mem-stall must be a probability from 0 to below 1, not "
                         f"{args.mem_stall}")
    latency = None
    if args.mem_latency_range is not None:
        lo, sep, hi = args.mem_latency_range.partition(":")
        if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
            raise UsageError(f"--mem-latency-range takes LO:HI in cycles (e.g. 20:300), not "
                             f"{args.mem_latency_range!r}")
        latency = (int(lo), int(hi))
    try:
        return BusFaults.timing(1 if args.mem_seed is None else args.mem_seed, latency,
                                args.mem_stall)
    except ValueError as e:
        raise UsageError(f"random memory timing: {e}") from None


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("simulated system (RTL backends)")
    g.add_argument("--mem-latency", type=int, default=100, metavar="CYCLES",
                   help="main-memory latency in cycles (default: 100)")
    g.add_argument("--mem-gap", type=int, default=0, metavar="CYCLES",
                   help="idle cycles after each memory beat: 0 is the bus's full bandwidth, "
                        "g is 1/(g+1) of it (default: 0)")
    g.add_argument("--mem-latency-range", metavar="LO:HI",
                   help="random memory timing: each burst's latency drawn from LO..HI cycles "
                        "(instead of --mem-latency; verilator and icarus)")
    g.add_argument("--mem-stall", type=float, default=0.0, metavar="P",
                   help="random memory timing: the probability, each cycle, of a stall on "
                        "each of the five AXI channels (0 to below 1; default: 0)")
    g.add_argument("--mem-seed", type=int, metavar="SEED",
                   help="the seed of the random memory timing (default: 1; docs/simulation.md)")
    g.add_argument("--trace", metavar="FILE.fst",
                   help="verilator: write an FST waveform of a window of cycles (a "
                        "separate build with tracing; off by default)")
    g.add_argument("--trace-from", type=int, default=0, metavar="CYCLE",
                   help="first traced cycle, counted from the first START (default: 0)")
    g.add_argument("--trace-cycles", type=int, default=10_000, metavar="N",
                   help="cycles to trace (default: 10000)")
    g = p.add_argument_group("board (uart backend: docs/board.md)")
    g.add_argument("--port", metavar="DEVICE",
                   help="the board's serial port, e.g. /dev/ttyUSB0")
    g.add_argument("--baud", type=int, default=115_200,
                   help="the board's UART baud rate (default: 115200)")


def _bench_sim(cfg, args) -> int:
    from .bench import bench_sim

    fig = bench_sim(cfg, m=args.m, k=args.k, n=args.n, cocotb=not args.no_cocotb,
                    fresh=args.fresh, seed=args.seed, progress=_progress)
    nat = fig["native"]
    print(f"simulation speed on Verilator: {cfg.describe()}; {fig['workload']}, "
          f"{nat['cycles']:,} cycles, checked against the golden model")
    print(f"  {'harness':10} {'cycles/s':>12} {'simulation s':>13} {'wall s':>8}")
    for h in ("native", "cocotb"):
        if h in fig:
            r = fig[h]
            print(f"  {h:10} {r['sim_cycles_per_s']:>12,} {r['sim_seconds']:>13.2f} "
                  f"{r['wall_seconds']:>8.1f}")
    if "speedup" in fig:
        print(f"  native / cocotb: {fig['speedup']}x; same counters: "
              f"{'yes' if fig['same_counters'] else 'NO'}")
    mem = nat["memory"]
    print(f"  main memory: {mem['latency_cycles']}-cycle latency, {mem['bytes_per_cycle']:g} "
          f"bytes/cycle")
    print(f"  native build: {fig['build_s']} s, of which Verilator {fig['build_simulator_s']} s "
          f"({fig['build_compile_jobs']} compile jobs"
          + (f"; profile-guided, its training run {fig['build_training_s']} s"
             if fig.get("build_profile") else "")
          + f"{'; cached: the time of its first build' if fig['build_cached'] else ''})")
    _write_json(args.json, fig)
    return 0 if fig.get("same_counters", True) else 1


def _bench_model(cfg, args) -> int:
    from .bench import bench_model, format_model_bench

    fig = bench_model(cfg, progress=_progress)
    print(format_model_bench(fig))
    _write_json(args.json, fig)
    return 0


def _bench_model_speed(cfg, args) -> int:
    from .bench import bench_model_speed, format_model_speed

    fig = bench_model_speed(cfg, progress=_progress)
    print(format_model_speed(fig))
    _write_json(args.json, fig)
    return 0


def _bench_gemm(cfg, args) -> int:
    from .bench import bench_gemm, format_counters

    sims = args.sim.split(",")
    results = {}
    for sim in sims:
        fig = bench_gemm(cfg, sim, args.m, args.k, args.n, bias=args.bias,
                         activation=args.act, seed=args.seed, progress=_progress,
                         runtime=_runtime_options(args, sim))
        results[sim] = fig
        print(f"matrix product {args.m} x {args.k} x {args.n} on {sim}: {cfg.describe()}; "
              f"{fig['commands']} commands; result checked against the golden model")
        print(f"  plan: {fig['plan']}")
        print(format_counters(cfg, fig))
        if fig.get("sim_cycles_per_s"):
            print(f"  simulated {fig['sim_cycles_per_s']:,} cycles/s "
                  f"({fig['sim_seconds']} s of simulation, {fig['harness']} harness; "
                  f"{fig['wall_seconds']} s in all)")
        for path in fig.get("traces", []):
            print(f"  waveform: {path}")
    _write_json(args.json, results[sims[0]])
    return 0


def _bench_array(cfg, args) -> int:
    from .bench import bench_array

    results = {}
    for sim in args.sim.split(","):
        tiles = args.tiles if args.tiles else (32 if sim == "verilator" else 4)
        fig = bench_array(cfg, sim, dataflow=args.dataflow, tiles=tiles,
                          rows_per_tile=args.rows, seed=args.seed, progress=_progress)
        results[sim] = fig
        print(f"array benchmark on {sim}: {cfg.describe()}, {args.dataflow.upper()}, "
              f"{tiles} back-to-back tiles of {args.rows} rows, all results checked")
        _print_figures(fig, ["cycles", "macs", "utilization", "steady_utilization",
                             "latency_cycles", "sim_cycles_per_s"])
    first = results[args.sim.split(",")[0]]
    out = dict(first)
    out["sim_cycles_per_s_by_simulator"] = {s: f["sim_cycles_per_s"] for s, f in results.items()}
    _write_json(args.json, out)
    return 0


def cmd_demo(args) -> int:
    from .bench import bench_gemm, format_counters
    from .run import check_fits, layer_bytes

    cfg = _config(args)
    check_fits(cfg, args.sim, layer_bytes(cfg, "gemm", args.m, args.k, args.n),
               f"a {args.m} x {args.k} x {args.n} matrix product")
    out = Path(args.output)
    _progress(f"generating the accelerator for {cfg.describe()} into {out}/...")
    paths = _write_outputs(cfg, out, "accelerator")
    print(f"Verilog: {paths['verilog']} ({paths['verilog'].stat().st_size / 1e6:.1f} MB), "
          f"register map {paths['registers']}, configuration hash {cfg.hash}")
    fig = bench_gemm(cfg, args.sim, args.m, args.k, args.n, bias=True, activation="gelu",
                     seed=args.seed, progress=_progress)
    print(f"C = GELU(requantize(A x B + bias)), A {args.m}x{args.k}, B {args.k}x{args.n}, "
          f"through the whole accelerator on {args.sim} ({fig['commands']} commands):")
    print(f"  plan: {fig['plan']}")
    print(format_counters(cfg, fig))
    print(f"all {args.m * args.n} results equal the golden model bit for bit")
    return 0


def cmd_run(args) -> int:
    from .run import run_bert, run_gpt2

    cfg = _config(args)
    if args.layer == "minilm":
        return _run_minilm(cfg, args)
    if args.activations and not (args.layer == "bert" and args.model):
        raise UsageError("--activations belongs to 'tessera run minilm' and 'tessera run "
                         "bert --model DIR' (sentence encoders)")
    if args.layer == "bert":
        return _run_encoder(cfg, args)
    if args.layer == "gpt2":
        return _run_decoder(cfg, args)
    if args.text or args.sentences or args.out or args.held_out:
        raise UsageError("--text, --sentences, --held-out and --out belong to 'tessera run "
                         "minilm'")
    layers = ("bert-layer", "gpt2-layer", "gpt2-decode", "minilm", "bert", "gpt2")
    if args.layer not in layers:
        raise UsageError(f"unknown layer {args.layer!r}; available: {', '.join(layers)}")
    if args.layer != "bert-layer":
        if args.model:
            raise UsageError("--model takes a BERT model (minilm); GPT-2 runs random "
                             "weights of the given shape")
        fig = run_gpt2(cfg, args.backend, decode=args.layer == "gpt2-decode", seq=args.seq,
                       hidden=args.hidden, heads=args.heads, ffn=args.ffn, steps=args.steps,
                       seed=args.seed, dataflow=args.dataflow or "base", progress=_progress,
                       runtime=_runtime_options(args, args.backend))
        return _report_run(fig, args)
    model_layer = model_dir = None
    if args.model:
        model_layer, model_dir = _model_arg(args)
    fig = run_bert(cfg, args.backend, seq=args.seq, hidden=args.hidden, heads=args.heads,
                   ffn=args.ffn, model_layer=model_layer, model_dir=model_dir,
                   seed=args.seed, dataflow=args.dataflow or "extended", progress=_progress,
                   runtime=_runtime_options(args, args.backend))
    return _report_run(fig, args)


def _run_encoder(cfg, args) -> int:
    from .run_model import format_encoder, run_encoder_model

    if args.model:
        # A BERT folder: real sentences through its (first --layers) layers, as minilm.
        return _run_minilm(cfg, args, Path(args.model))
    if args.text or args.sentences or args.out:
        raise UsageError("--text, --sentences and --out need a model: tessera run bert "
                         "--model DIR, or tessera run minilm")
    fig = run_encoder_model(cfg, args.backend, layers=args.layers or 12, seq=args.seq,
                            hidden=args.hidden, heads=args.heads, ffn=args.ffn,
                            batch=args.batch, seed=args.seed, progress=_progress,
                            runtime=_runtime_options(args, args.backend))
    print(format_encoder(fig))
    _write_json(args.json, fig)
    return 0


def _run_decoder(cfg, args) -> int:
    from .run_model import format_decoder, run_decoder_model

    if args.sentences or args.out or (args.text and len(args.text) > 1):
        raise UsageError("tessera run gpt2 takes one --text (the prompt, with --model)")
    if args.text and not args.model:
        raise UsageError("a text prompt needs a model's tokenizer: --model DIR")
    model_dir = Path(args.model) if args.model else None
    layers = args.layers
    if layers is None and model_dir is not None:
        from .models.gpt2_folder import read_gpt2_config
        layers = read_gpt2_config(model_dir)["n_layer"]
    fig = run_decoder_model(cfg, args.backend, layers=layers or 12, hidden=args.hidden,
                            heads=args.heads, ffn=args.ffn, vocab=args.vocab,
                            prompt_len=args.prompt_len, generate=args.generate,
                            seed=args.seed, progress=_progress,
                            runtime=_runtime_options(args, args.backend),
                            model_dir=model_dir, prompt=args.text[0] if args.text else None)
    print(format_decoder(fig))
    _write_json(args.json, fig)
    return 0


def _run_minilm(cfg, args, model_dir: Path | None = None) -> int:
    from .models import minilm
    from .run_model import format_minilm, read_sentences, run_minilm, save_embeddings

    if args.model and model_dir is None:
        raise UsageError("tessera run minilm runs all-MiniLM-L6-v2 (installed by make "
                         "install); another BERT folder: tessera run bert --model DIR")
    if args.out:
        from .check import output_file
        output_file(args.out, "--out file")
    sentences = list(args.text or [])
    if args.sentences:
        sentences += read_sentences(args.sentences)
    if args.held_out:
        if model_dir is not None:
            raise UsageError("--held-out measures all-MiniLM-L6-v2: tessera run minilm "
                             "--held-out")
        sentences += minilm.HELD_OUT_SENTENCES
    if not sentences:
        sentences = list(minilm.EVALUATION_SENTENCES)
        _progress(f"no --text or --sentences: the {len(sentences)} evaluation sentences")
    fig = run_minilm(cfg, args.backend, sentences, max_len=args.seq, progress=_progress,
                     runtime=_runtime_options(args, args.backend), per_op=args.per_op,
                     explain=args.explain, model_dir=model_dir,
                     layers=args.layers if model_dir is not None else None,
                     wide=args.activations != "int8")      # wide by default
    emb = fig.pop("embeddings")
    print(format_minilm(fig, sentences))
    if args.out:
        save_embeddings(args.out, emb)
        _progress(f"wrote the embeddings ({emb.shape[0]} x {emb.shape[1]}) to {args.out}")
    _write_json(args.json, fig)
    return 0


def _model_arg(args) -> tuple[int, Path | None]:
    """``--model NAME[:LAYER]``: the layer and the model folder (None: MiniLM's), checked
    (the folder's files, its config.json, its tensors' shapes) before any work."""
    name, sep, layer = args.model.rpartition(":")
    if not sep:
        name, layer = args.model, ""
    usage = ("give minilm[:LAYER] (all-MiniLM-L6-v2) or a BERT model folder (config.json, "
             "model.safetensors, tokenizer.json)[:LAYER]")
    if not name:
        raise UsageError(f"--model {args.model!r} names no model: {usage}")
    if layer and not layer.isdigit():
        raise UsageError(f"the layer in --model {args.model!r} must be a layer number (0 is "
                         f"the first), not {layer!r}")
    model_layer = int(layer or 0)
    if name == "minilm":
        from .models.minilm import INSTALL_COMMAND, is_installed

        if not is_installed():
            raise UsageError(f"all-MiniLM-L6-v2 is not installed: run `{INSTALL_COMMAND}`")
        folder, layers, positions = None, 6, 512
    else:
        from .models.minilm import check_model_folder

        folder = Path(name)
        if not folder.exists():
            raise UsageError(f"unknown model {name!r}: {usage}")
        mc = check_model_folder(folder)
        layers, positions = mc["num_hidden_layers"], min(mc["max_position_embeddings"], 512)
    if model_layer >= layers:
        raise UsageError(f"{name} has layers 0 to {layers - 1}, not {model_layer}")
    if not 2 <= args.seq <= positions:
        raise UsageError(f"--seq must be from 2 to {positions} (the model's positions) with "
                         f"--model {name}, not {args.seq}")
    return model_layer, folder


def _report_run(fig: dict, args) -> int:
    from .run import format_report

    print(format_report(fig))
    _write_json(args.json, fig)
    ok = fig["bit_exact_with_integer_model"] and fig.get("bit_exact_with_golden", True)
    return 0 if ok else 1


def _emit(text: str, output: str | None) -> int:
    """Write a generated document to ``output``, or to standard output."""
    if output:
        write_text(output, text, "-o")
        print(f"wrote {output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_isa(args) -> int:
    from ..hw.isa import isa_markdown

    return _emit(isa_markdown(_config(args)), args.output)


def cmd_registers(args) -> int:
    from ..hw.registers import register_map_markdown

    return _emit(register_map_markdown(), args.output)


def cmd_disasm(args) -> int:
    from ..hw.isa import disassemble
    from .command_buffer import open_command_buffer

    named = args.preset is not None or args.config is not None
    buf = open_command_buffer(args.file, _config(args) if named else None)
    if not buf.has_header:
        _progress(f"{args.file} has no header: its words are read as configuration "
                  f"{buf.config.hash}, as asked")
    # One word at a time, streamed: a buffer of any size prints without being held whole.
    for i, word in enumerate(buf.words()):
        line = disassemble(buf.config, [word])[0].lstrip()
        print(f"{i:5d}{line[1:]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessera", description="Tessera: a generator of transformer-inference accelerators.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("config", help="show a configuration and its derived values")
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print it as JSON (with its hash)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("isa", help="the command format, as Markdown (docs/isa.md)")
    _add_config_args(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE")
    p.set_defaults(func=cmd_isa)

    p = sub.add_parser("registers", help="the register map, as Markdown (docs/registers.md)")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE")
    p.set_defaults(func=cmd_registers)

    p = sub.add_parser("disasm", help="disassemble a command buffer (a binary file)")
    _add_config_args(p, default=None, required=False,
                     why="the configuration the file's header names, if a preset")
    p.add_argument("file", metavar="FILE",
                   help="a command buffer with its header (docs/errors.md); a raw dump of "
                        "words only with --preset or --config")
    p.set_defaults(func=cmd_disasm)

    p = sub.add_parser("generate", help="write the Verilog of a configuration")
    _add_config_args(p, default=None)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--top", default="accelerator", choices=list(TOPS), help="top level")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("lint", help="generate and lint with verilator -Wall")
    _add_config_args(p)
    p.add_argument("--top", default="matrix_unit", choices=list(TOPS), help="top level")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("synth", help="synthesize with the open tools (YoWASP): resources per "
                                     "unit; with --pnr, place, route and time on the ECP5")
    _add_config_args(p)
    p.add_argument("--target", default="ecp5",
                   choices=["ecp5", "ice40", "sky130", "generic"])
    p.add_argument("--top", default="accelerator", choices=list(TOPS), help="top level")
    p.add_argument("--place", action="store_true",
                   help="ecp5: place, and estimate the clock after placement")
    p.add_argument("--pnr", action="store_true",
                   help="ecp5: place and route; the achieved clock and the critical path")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="the clock nextpnr aims for (default 100)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="--place/--pnr: place with N seeds from --seed (as many at once as "
                        "there are cores) and keep the fastest; the report lists each")
    p.add_argument("--no-dsp-registers", action="store_true",
                   help="ecp5: leave the multipliers' operand and product flip-flops in the "
                        "fabric (by default they move into the DSPs' own registers)")
    p.add_argument("--max-fanout", type=int, default=None, metavar="N",
                   help="ecp5, --place/--pnr: give a flip-flop that drives more than N cells "
                        "copies that share them (default 64; 0: none)")
    p.add_argument("--paths", type=int, default=0, metavar="N",
                   help="ecp5: rank the N worst groups of paths over the --freq period, "
                        "estimated before placement (minutes, where placing takes half an "
                        "hour); with --pnr, ranked by nextpnr's routed arrival times")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("fpga", help="the bitstream of a board top (accelerator, block-RAM "
                                    "memory, UART host link) with the YoWASP tools; minutes")
    _add_config_args(p, default="tiny")
    p.add_argument("--board", default="ulx3s", choices=["ulx3s"],
                   help="the board (default: ulx3s, the ECP5-85F version)")
    p.add_argument("--freq", type=float, default=None, metavar="MHZ",
                   help="the accelerator's clock, made by the board's PLL (default: the "
                        "board's, 40 on the ULX3S)")
    p.add_argument("--baud", type=int, default=115_200, help="the UART (default 115200)")
    p.add_argument("--mem-kib", type=int, default=128, metavar="KIB",
                   help="main memory in block RAM (default 128)")
    p.add_argument("--seed", type=int, default=None,
                   help="nextpnr's first seed (default: the board's, 2 on the ULX3S); when "
                        "its router will not converge, the build tries the next two")
    p.add_argument("--dsp-registers", action="store_true",
                   help="move the multipliers' flip-flops into the DSPs' own registers "
                        "before placement (as tessera synth --pnr does; on the ULX3S top "
                        "nextpnr's router did not converge with them: docs/board.md)")
    p.add_argument("--max-fanout", type=int, default=None, metavar="N",
                   help="give a flip-flop that drives more than N cells copies that share "
                        "them, before placement (default: the board's, 64; 0: none)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="build folder (default: build/fpga-BOARD)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.set_defaults(func=cmd_fpga)

    p = sub.add_parser("bench", help="measure a unit on the generated Verilog")
    p.add_argument("target", metavar="TARGET",
                   help="what to measure: gemm (the whole accelerator), sim (simulation "
                        "speed: native against cocotb), array, dma, nonlinear, model (the "
                        "performance model's cycles against Verilator's on the benchmark "
                        "layers), model-speed (the CPU time of the model over a whole "
                        "BERT-base encoder)")
    _add_config_args(p)
    p.add_argument("--sim", default="verilator",
                   help="icarus, verilator, or both comma-separated (default: verilator)")
    p.add_argument("--dataflow", default="ws", choices=["ws", "os"])
    p.add_argument("--tiles", type=int, default=0,
                   help="tiles to stream (default: 32 on Verilator, 4 on Icarus)")
    p.add_argument("--rows", type=int, default=256, help="rows (WS) or steps (OS) per tile")
    p.add_argument("--latency", type=int, default=100,
                   help="dma: main-memory latency in cycles (default: 100)")
    p.add_argument("--m", type=int, default=512, help="gemm: rows of A (default: 512)")
    p.add_argument("--k", type=int, default=512, help="gemm: columns of A (default: 512)")
    p.add_argument("--n", type=int, default=512, help="gemm: columns of B (default: 512)")
    p.add_argument("--bias", action="store_true", help="gemm: add an int32 bias per column")
    p.add_argument("--act", default="none", choices=["none", "relu", "gelu"],
                   help="gemm: activation after requantization")
    p.add_argument("--no-cocotb", action="store_true",
                   help="sim: measure the native harness only")
    p.add_argument("--fresh", action="store_true",
                   help="sim: time a first build in a new build folder (minutes)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("run", help="run a transformer layer, or a whole model, on a backend "
                                   "and report it")
    p.add_argument("layer", metavar="LAYER",
                   help="bert-layer, gpt2-layer (causal prefill of --seq tokens), "
                        "gpt2-decode (--steps tokens after a KV cache of --seq), minilm "
                        "(all-MiniLM-L6-v2's sentence embeddings: every layer and every "
                        "sentence in one program; --seq is the truncation length), bert "
                        "(a whole encoder of --layers random layers over --batch sequences, "
                        "one program), or gpt2 (greedy generation through --layers random "
                        "blocks: --prompt-len, --generate)")
    _add_config_args(p)
    p.add_argument("--backend", default="golden",
                   choices=["golden", "icarus", "verilator", "amaranth", "uart", "model"],
                   help="where it runs (default: golden); model: the performance model's "
                        "predicted cycles and counters, the data by the golden model")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=3072)
    p.add_argument("--model", metavar="NAME[:LAYER]",
                   help="real weights, on real sentences: minilm[:LAYER] "
                        "(all-MiniLM-L6-v2), or a BERT model folder with config.json, "
                        "model.safetensors and tokenizer.json")
    p.add_argument("--steps", type=int, default=1, help="gpt2-decode: tokens to decode")
    p.add_argument("--dataflow", choices=["extended", "base"],
                   help="quantization dataflow. BERT (default extended): per-group scales "
                        "everywhere and prescaled LayerNorm inputs; base: per-tensor Wo, "
                        "W2. GPT-2 (default base): one residual-stream scale; extended: "
                        "one per 16 columns, for outliers")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--layers", type=int,
                   help="bert, gpt2: layers (default 12; with bert --model DIR, all of its "
                        "layers)")
    p.add_argument("--batch", type=int, default=1,
                   help="bert: sequences of --seq tokens in the one program (default 1)")
    p.add_argument("--prompt-len", type=int, default=32, help="gpt2: prompt tokens")
    p.add_argument("--generate", type=int, default=16, help="gpt2: tokens to generate")
    p.add_argument("--vocab", type=int, default=1000, help="gpt2: vocabulary size")
    p.add_argument("--text", action="append", metavar="SENTENCE",
                   help="minilm: a sentence to embed (repeat for several)")
    p.add_argument("--sentences", metavar="FILE",
                   help="minilm: sentences to embed, one per line")
    p.add_argument("--held-out", action="store_true",
                   help="minilm: the sentences written to measure fidelity on and never used "
                        "to choose the quantization (minilm.HELD_OUT_SENTENCES)")
    p.add_argument("--per-op", action="store_true",
                   help="minilm on RTL: also run the same commands phase by phase, for the "
                        "per-layer and per-operation table of the hardware counters")
    p.add_argument("--explain", action="store_true",
                   help="minilm: where the error comes from, per layer and operation")
    p.add_argument("--activations", choices=["wide", "int8"],
                   help="minilm, bert --model: wide (the default: 15 bits as two int8 "
                        "digits, every product two passes of the array; within 0.985 of "
                        "the float model on one-word sentences too) or int8 (about half "
                        "the cycles; see docs/accuracy.md)")
    p.add_argument("--out", metavar="FILE.npy",
                   help="minilm: write the embeddings (sentences x 384, float64)")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="generate the accelerator, run a tiled matrix product "
                                    "through it on RTL, check it, print the counters")
    _add_config_args(p)
    p.add_argument("--sim", default="verilator", choices=["icarus", "verilator"])
    p.add_argument("-o", "--output", default="out/demo", metavar="DIR")
    p.add_argument("--m", type=int, default=256)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("fuzz", help="random command streams on the RTL and the golden model, "
                                    "compared; a mismatch is shrunk and written")
    _add_config_args(p, default="tiny")
    p.add_argument("--streams", type=int, default=1000, metavar="N",
                   help="programs to run (default 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sim", default="verilator", choices=["icarus", "verilator"])
    p.add_argument("--illegal", type=float, default=0.2, metavar="FRACTION",
                   help="the share of programs that end in a bad command (default 0.2)")
    p.add_argument("--out", default="build/fuzz", metavar="DIR",
                   help="where mismatches are written (default build/fuzz)")
    p.add_argument("--stop-after", type=int, default=1, metavar="N",
                   help="stop after N mismatches (default 1)")
    p.add_argument("--bus-timing", action="store_true",
                   help="each program on a memory of random timing (latency per burst, "
                        "stalls on all five AXI channels)")
    p.add_argument("--replay", metavar="FILE",
                   help="run a written mismatch (its .bin) again instead")
    p.add_argument("--bus-timing-seed", type=int, metavar="S",
                   help="with --replay: the memory timing the mismatch was found with")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    p.set_defaults(func=cmd_fuzz)

    p = sub.add_parser("sweep", help="a design-space sweep: configurations x workloads as "
                                     "Dask tasks, cost, Pareto fronts, RTL re-check")
    p.add_argument("spec", metavar="SPEC", help="the sweep's specification (YAML or JSON; "
                                                "examples/sweep-*.yaml)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="a running Dask scheduler (tcp://HOST:8786); default: a local "
                        "cluster on this machine")
    p.add_argument("--workers", type=int, metavar="N",
                   help="workers of the local cluster (default: one per core, at most 2)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="where the table, plots and cache go (default: build/sweep-NAME)")
    p.add_argument("--recheck", metavar="WHICH",
                   help="points re-run on RTL: pareto, none, or a number per workload "
                        "(default: the specification's, else pareto)")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    p.set_defaults(func=cmd_sweep)
    return parser


def cmd_sweep(args) -> int:
    from .sweep import format_summary, load_spec, run_sweep

    recheck = args.recheck
    if recheck is not None and recheck not in ("pareto", "none"):
        try:
            recheck = whole_number(int(recheck), "--recheck", 0)
        except ValueError:
            raise UsageError(f"--recheck must be pareto, none or a number of points, not "
                             f"{args.recheck!r}") from None
    spec = load_spec(args.spec)
    out = run_sweep(spec, output=args.output, scheduler=args.scheduler,
                    workers=args.workers, recheck=recheck,
                    progress=lambda m: _progress(f"sweep: {m}"))
    print(format_summary(out))
    _write_json(args.json, out)
    return 0


def cmd_fuzz(args) -> int:
    from .fuzz import fuzz, replay, summary

    if not 0.0 <= args.illegal <= 1.0:
        raise UsageError(f"--illegal is a fraction from 0 to 1, not {args.illegal}")
    if args.replay:
        named = args.config is not None or args.preset != "tiny"
        what = replay(_config(args) if named else None, Path(args.replay), args.sim,
                      bus_timing_seed=args.bus_timing_seed)
        print(what or "the backends agree")
        return 1 if what else 0
    cfg = _config(args)
    where = f"--config {args.config}" if args.config else f"--preset {args.preset}"
    out = fuzz(cfg, args.streams, args.seed, sim=args.sim, illegal=args.illegal,
               out=Path(args.out), preset_arg=where, progress=_progress,
               stop_after=args.stop_after, bus_timing=args.bus_timing)
    print(summary(out))
    _write_json(args.json, out)
    return 1 if out["mismatches"] else 0


def cmd_synth(args) -> int:
    from .synth import format_report, place_and_route, synthesize

    cfg = _config(args)
    positive_number(args.freq, "--freq", "MHz", hi=MAX_FREQ_MHZ)
    if (args.pnr or args.place or args.paths) and args.target != "ecp5":
        raise UsageError("--pnr, --place and --paths are for --target ecp5")
    fanout = {}
    if args.max_fanout is not None:
        if not (args.pnr or args.place):
            raise UsageError("--max-fanout is for --place and --pnr")
        if args.max_fanout == 1 or args.max_fanout < 0:
            raise UsageError(f"--max-fanout is 0 (no copies) or at least 2, not "
                             f"{args.max_fanout}")
        fanout = {"max_fanout": args.max_fanout or None}
    if args.seeds != 1 and not (args.pnr or args.place):
        raise UsageError("--seeds is for --place and --pnr")
    report = synthesize(cfg, args.target, args.top)
    if args.pnr or args.place:
        place_and_route(report, freq_mhz=args.freq, route=args.pnr, seed=args.seed,
                        seeds=args.seeds, dsp_registers=not args.no_dsp_registers, **fanout)
    out = report.to_dict()
    text = format_report(report)
    if args.paths:
        from .paths import estimate_paths, format_paths, read_report, read_routed_arrivals
        from .synth import pnr_netlist, synthesize_wrapped

        work = Path(report.workdir)
        if not (args.pnr or args.place):
            synthesize_wrapped(report, names=False)
        # After routing, the ranking takes nextpnr's arrival time at every endpoint.
        data = read_report(work / "pnr.json") if args.pnr else None
        routed = read_routed_arrivals(data) if data is not None else None
        estimate = estimate_paths(pnr_netlist(work), top_spec(args.top).module,
                                  1e3 / args.freq, routed=routed)
        text += "\n\n" + format_paths(estimate, args.paths)
        out["paths"] = estimate.to_dict()
        if routed:
            # What kind of input the late endpoints are, and the wide nets that reach them.
            from .paths import format_late, late_fanouts, late_pins

            period, module = 1e3 / args.freq, top_spec(args.top).module
            pins = late_pins(data, period)
            fanouts = late_fanouts(data, period, top_module=module)
            text += "\n\n" + format_late(pins, fanouts, period, limit=min(args.paths, 15))
            out["paths"]["late_pins"] = pins
            out["paths"]["late_fanouts"] = [f.__dict__ for f in fanouts]
    print(text)
    _write_json(args.json, out)
    return 0


def cmd_fpga(args) -> int:
    from .fpga import build_bitstream, format_report

    cfg = _config(args)
    if args.freq is not None:
        positive_number(args.freq, "--freq", "MHz", hi=MAX_FREQ_MHZ)
    report = build_bitstream(cfg, args.board, freq_mhz=args.freq, baud=args.baud,
                             mem_kib=args.mem_kib, build_dir=args.output, seed=args.seed,
                             dsp_registers=args.dsp_registers, max_fanout=args.max_fanout)
    print(format_report(report))
    _write_json(args.json, report)
    return 0


#: The whole-number options and their ranges (None: no upper bound). A value outside is
#: a usage error before any work.
INT_OPTIONS = {
    "tiles": (0, None), "rows": (1, None), "m": (1, None), "k": (1, None), "n": (1, None),
    "seq": (1, None), "hidden": (1, None), "heads": (1, None), "ffn": (1, None),
    "steps": (1, None), "mem_latency": (1, 65535), "mem_gap": (0, 255),
    "latency": (0, 65535), "trace_from": (0, (1 << 63) - 1),
    "trace_cycles": (1, (1 << 63) - 1),
    "seed": (0, (1 << 32) - 1), "baud": (1, None), "mem_kib": (1, None),
    "mem_seed": (0, (1 << 64) - 1), "streams": (1, None), "stop_after": (1, None),
    "bus_timing_seed": (0, None), "layers": (1, 96), "batch": (1, 64),
    "prompt_len": (1, None), "generate": (1, None), "vocab": (2, 1 << 17),
    "workers": (1, 256), "paths": (0, None), "max_fanout": (0, None),
    "seeds": (1, 64),
}
#: Highest clock --freq may ask for: far above what an FPGA or the open ASIC flow reaches.
MAX_FREQ_MHZ = 1000.0
#: Options that name a file to write, and by command those that name a folder to write
#: into (-o, ``output``, is a file for isa and registers, a folder elsewhere).
FILE_OPTIONS = ("json",)
DIR_OPTIONS = {"fuzz": ("out",)}


_GEMM_RUNTIME = ("mem_latency", "mem_gap", "mem_latency_range", "mem_stall", "mem_seed",
                 "trace", "trace_from", "trace_cycles", "port")
#: Options that only some targets of a command read, by (command, option): those targets.
#: Given to another target, an option would be ignored without a word: it is refused.
ONLY_FOR = {
    **{("bench", name): ("gemm", "sim") for name in ("m", "k", "n")},
    **{("bench", name): ("gemm",) for name in ("bias", "act", *_GEMM_RUNTIME)},
    **{("bench", name): ("array",) for name in ("tiles", "rows", "dataflow")},
    **{("bench", name): ("sim",) for name in ("no_cocotb", "fresh")},
    ("bench", "latency"): ("dma",),
    ("run", "steps"): ("gpt2-decode",),
}


def _given(argv: list[str], name: str) -> bool:
    """Whether the option ``--name`` appears on the command line."""
    flag = f"--{name.replace('_', '-')}"
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _check_unused(parser: argparse.ArgumentParser, args, argv: list[str]) -> None:
    target = getattr(args, "target", None) or getattr(args, "layer", None)
    for (command, name), targets in ONLY_FOR.items():
        if command == args.command and target not in targets and _given(argv, name):
            parser.error(f"--{name.replace('_', '-')} is for {command} "
                         f"{' and '.join(targets)}, not {command} {target}: it would be "
                         f"ignored")


def _check_args(parser: argparse.ArgumentParser, args) -> None:
    """Numbers in range and output paths usable, before any work (a long run must not end
    in an unwritable --json)."""
    for name, (lo, hi) in INT_OPTIONS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        try:
            whole_number(value, f"--{name.replace('_', '-')}", lo, hi)
        except InputError as e:
            parser.error(str(e))
    for name in FILE_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str):      # (`config --json` is a flag, not a file)
            output_file(value, f"--{name}")
    for name in DIR_OPTIONS.get(args.command, ()):
        value = getattr(args, name, None)
        if isinstance(value, str | Path):
            output_dir(value, f"--{name}")
    if getattr(args, "output", None) is not None:
        if args.command in ("isa", "registers"):
            output_file(args.output, "-o")
        else:
            output_dir(args.output, "-o")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..sim.runner import SimulationFailed
    from ..sim.toolchain import SimulatorMissing
    from .fpga import FpgaError
    from .runtime import RunError
    from .runtime.uart import LinkError
    from .synth import SynthError

    _check_unused(parser, args, sys.argv[1:] if argv is None else list(argv))
    try:
        _check_args(parser, args)
        return args.func(args)
    except (TesseraError, ValueError) as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    except (SimulatorMissing, SimulationFailed, SynthError, FpgaError, LinkError,
            RunError) as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # A file named on the command line that went away or could not be read or written
        # while working (the paths are checked before): the system's reason, no traceback.
        where = f"cannot use {str(e.filename)!r}: " if e.filename else ""
        print(f"tessera: error: {where}{e.strerror or e} (a path given on the command line, "
              f"or the build folder: TESSERA_BUILD_DIR)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tessera: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

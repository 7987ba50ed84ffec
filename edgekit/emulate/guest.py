"""Runs inside the emulator with the guest's Python: `python3 guest.py REQUEST.json`.

Standalone on purpose: only numpy and the runtime's aarch64 wheel are installed in the guest, so
this file imports nothing from edgekit. It loads the artifact the way edgekit's host runtimes do
(onnxruntime's CPU provider; LiteRT with its default XNNPACK delegate, tensors matched by the
position in litert-torch's signature names), runs every input set, and times the runs when asked.
The request names an inputs .npz (keys "<set>/<input name>") and where to write the outputs.
"""

import json
import re
import sys
import time


def open_onnx(model_path, threads, probe=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    names = probe or [o.name for o in session.get_outputs()]

    def run(feed):
        return dict(zip(names, session.run(names, feed), strict=True))

    return run, f"onnxruntime {ort.__version__}"


def open_tflite(model_path, threads, input_names, output_names, probe=None):
    import importlib.metadata

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model_path, num_threads=threads or None)
    interpreter.allocate_tensors()
    if probe:  # verify --localize: a probe model whose subgraph outputs these tensor indices
        details = interpreter.get_input_details()
        quantization = {d["index"]: d["quantization"] for d in interpreter.get_tensor_details()}

        def dequantized(index):  # as edgekit.emulate.localize.dequantized on the host
            values = interpreter.get_tensor(index)
            scale, zero_point = quantization[index]
            if np.issubdtype(values.dtype, np.floating) or not scale:
                return values.copy()
            return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)

        def run_probe(feed):
            for name, detail in zip(input_names, details, strict=True):
                interpreter.set_tensor(detail["index"], np.asarray(feed[name], detail["dtype"]))
            interpreter.invoke()
            return {index: dequantized(int(index)) for index in probe}

        return run_probe, f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"
    runner = interpreter.get_signature_runner()

    def by_position(details):
        return [d for _, d in sorted((int(re.search(r"(\d+)$", k).group(1)), d)
                                     for k, d in details.items())]  # fmt: skip

    inputs = list(zip(input_names, by_position(runner.get_input_details()), strict=True))
    outputs = list(zip(output_names, by_position(runner.get_output_details()), strict=True))

    def run(feed):
        for name, detail in inputs:
            interpreter.set_tensor(detail["index"], np.asarray(feed[name], dtype=detail["dtype"]))
        interpreter.invoke()
        return {name: interpreter.get_tensor(detail["index"]).copy() for name, detail in outputs}

    return run, f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"


MARKER_SYSCALL = 0x4544  # insncount.c's MARKER


def marker():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return lambda: libc.syscall(MARKER_SYSCALL)  # ENOSYS for the guest kernel: no side effect


def main(request_path):
    with open(request_path) as handle:
        request = json.load(handle)
    sys.path.insert(0, request["site"])
    import numpy as np

    started = time.perf_counter()
    if request["format"] == "onnx":
        run, runtime = open_onnx(request["model"], request["threads"], request.get("probe_tensors"))
    elif request["format"] == "tflite":
        run, runtime = open_tflite(
            request["model"],
            request["threads"],
            request["inputs_order"],
            request["outputs_order"],
            request.get("probe_tensors"),
        )
    else:
        raise SystemExit(f"no guest runtime for {request['format']}")
    load_s = time.perf_counter() - started

    stored = np.load(request["inputs"])
    sets = sorted({key.split("/", 1)[0] for key in stored.files}, key=int)
    outputs = {}
    for index in sets:
        feed = {key.split("/", 1)[1]: stored[key] for key in stored.files
                if key.startswith(index + "/")}  # fmt: skip
        for name, value in run(feed).items():
            outputs[f"{index}/{name}"] = value
    np.savez(request["outputs"], **outputs)

    samples = []
    # Under the instruction-counting plugin, an unused system call marks each timed run's start
    # and end (insncount.c records its counter at each); otherwise a plain no-op.
    mark = marker() if request.get("count_instructions") else (lambda: None)
    if request.get("timed_runs"):
        feed = {key.split("/", 1)[1]: stored[key] for key in stored.files if key.startswith("0/")}
        for _ in range(request["timed_runs"]):
            mark()
            started = time.perf_counter()
            run(feed)
            samples.append((time.perf_counter() - started) * 1e3)
            mark()
    with open(request["result"], "w") as handle:
        json.dump({"runtime": runtime, "load_s": load_s, "samples_ms": samples}, handle)


if __name__ == "__main__":
    main(sys.argv[1])

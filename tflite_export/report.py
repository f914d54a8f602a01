"""`ExportReport`: what one `export_tflite` call produced and measured."""

import copy
from dataclasses import asdict, dataclass, field

from tflite_export.purity import describe


def _kb(n):
    return f"{n / 1024:.1f} KiB ({n:,} B)"


def _tensor(t):
    shape = "x".join(str(d) for d in t["shape_signature"]).replace("-1", "N")
    q = f"  scale={t['scale']:.6g} zero_point={t['zero_point']}" if t["scale"] else ""
    return f"{t.get('signature_name', t['name'])}: {t['dtype']}[{shape}]{q}"


@dataclass
class ExportReport:
    """What one `export_tflite` call produced and measured.

    ``str(report)`` is `table`; `to_dict` is the JSON-able form.

    Attributes:
        out_dir: the export directory.
        quantization: the quantization mode.
        size_bytes: size of ``model.tflite`` in bytes.
        params: number of parameters of the Keras model.
        input: the input tensor's manifest entry (name, shape, dtype, scale, zero_point, ...).
        output: the output tensor's manifest entry.
        ops: the op types of the ``.tflite``, sorted.
        signature: ``{key: {"inputs": [...], "outputs": [...]}}``.
        files: ``{file name: size in bytes}`` of the written files.
        flops: ``metadata["flops"]``, or None.
        accuracy: the `tflite_export.evaluate` dict, or None without validation data.
        latency_ms: median host-CPU latency of one batch-1 invoke, or None.
        micro: the TFLM section of the manifest (ops, arena, TFLite Micro run), or None.
        labels_file: ``"labels.txt"``, or None.
        config: ``metadata["config"]``, or None.
        int8_purity: the `tflite_export.purity.int8_purity` dict of an int8 export, or None.

    Example:
        >>> report = export_tflite(model, "out/b050", "int8", x_train[:500])  # doctest: +SKIP
        >>> report.size_bytes, report.files  # doctest: +SKIP
    """
    out_dir: str
    quantization: str
    size_bytes: int
    params: int
    input: dict
    output: dict
    ops: list
    signature: dict
    files: dict = field(default_factory=dict)
    flops: object = None
    accuracy: object = None
    latency_ms: object = None
    micro: object = None
    labels_file: object = None
    config: object = None
    int8_purity: object = None

    def to_dict(self):
        """JSON-able deep copy of every field.

        Returns:
            A dict with one key per field.

        Example:
            >>> json.dumps(report.to_dict())  # doctest: +SKIP
        """
        return copy.deepcopy(asdict(self))

    def rows(self):
        """The ``(label, value)`` rows that `table` lays out.

        Returns:
            A list of string pairs: size, quantization, params, FLOPs, tensors, signature and ops,
            then the accuracy, latency, int8 purity and TFLM rows when measured, and the files.
        """
        rows = [
            ("model.tflite", _kb(self.size_bytes)),
            ("quantization", self.quantization),
            ("params", f"{self.params:,}"),
            ("FLOPs", "-" if self.flops is None else f"{self.flops:,}"),
            ("input", _tensor(self.input)),
            ("output", _tensor(self.output)),
            ("signature", ", ".join(
                f"{k}({', '.join(v['inputs'])}) -> {', '.join(v['outputs'])}"
                for k, v in self.signature.items())),
            ("ops", ", ".join(self.ops)),
        ]
        acc = self.accuracy
        if acc:
            rows += [
                ("accuracy Keras", f"{acc['keras_accuracy']:.4f}  (n={acc['num_samples']})"),
                ("accuracy TFLite", f"{acc['tflite_accuracy']:.4f}  "
                 f"(drop {100 * acc['accuracy_drop']:+.2f} pt)"),
                ("top-1 agreement", f"{100 * acc['top1_agreement']:.2f} %"),
                ("max |dp|", f"{acc['max_abs_diff']:.3g}  (mean {acc['mean_abs_diff']:.3g})"),
            ]
        if self.latency_ms is not None:
            rows.append(("latency host b=1", f"{self.latency_ms:.3f} ms"))
        if self.int8_purity is not None:
            rows.append(("int8 purity", describe(self.int8_purity)))
        if self.micro:
            rows += _micro_rows(self.micro)
        rows.append(("files", ", ".join(f"{k} ({v:,} B)" for k, v in self.files.items())))
        return rows

    def table(self):
        """Human-readable two-column text table (also ``str(report)``).

        Returns:
            The table as a string, titled with the export directory.

        Example:
            >>> print(report.table())  # doctest: +SKIP
        """
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        title = f"TFLite export -> {self.out_dir}"
        line = "-" * max(len(title), 60)
        body = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
        return f"{title}\n{line}\n{body}\n{line}"

    def __str__(self):
        return self.table()


def _micro_rows(micro):
    arena, tflm = micro["arena"], micro.get("tflm") or {}
    estimate = arena["estimate"]["recommended_bytes"]
    if arena["source"] == "measured":
        m = arena["measured"]
        rows = [("TFLM arena", f"{_kb(arena['recommended_bytes'])}  measured: min "
                 f"{m['min_bytes']:,} B + {100 * m['margin']:g} %  (estimate was {estimate:,} B)")]
    else:
        rows = [("TFLM arena (est.)", f"{_kb(arena['recommended_bytes'])}  estimate, not "
                 f"measured; peak act. {arena['estimate']['peak_activation_bytes']:,} B")]
    if tflm.get("version") is None:
        rows.append(("TFLM run", tflm.get("note", "not run")))
    else:
        ref = tflm["reference"]
        rows += [
            ("TFLM vs LiteRT", f"top-1 agreement {100 * tflm['top1_agreement']:.2f} %, max |dp| "
             f"{tflm['max_abs_diff']:.3g}, identical {100 * tflm['exact_match']:.1f} %  "
             f"(n={tflm['num_samples']}, arena {tflm['arena_bytes']:,} B)"),
            ("TFLM vs LiteRT ref", f"top-1 agreement {100 * ref['top1_agreement']:.2f} %, "
             f"max |dp| {ref['max_abs_diff']:.3g}, identical {100 * ref['exact_match']:.1f} %  "
             "(LiteRT reference kernels)"),
            ("TFLM latency host", f"{tflm['latency_ms_per_image']:.3f} ms/image  (tflite-micro "
             f"{tflm['version']}, reference kernels)"),
        ]
    rows.append(("TFLM C array", f"{micro['source']} / {micro['header']}  ({micro['variable']})"))
    return rows

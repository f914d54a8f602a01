"""`ExportReport`: what one `export_tflite` call produced and measured."""

import copy
from dataclasses import asdict, dataclass, field


def _kb(n):
    return f"{n / 1024:.1f} KiB ({n:,} B)"


def _tensor(t):
    shape = "x".join(str(d) for d in t["shape_signature"]).replace("-1", "N")
    q = f"  scale={t['scale']:.6g} zero_point={t['zero_point']}" if t["scale"] else ""
    return f"{t.get('signature_name', t['name'])}: {t['dtype']}[{shape}]{q}"


@dataclass
class ExportReport:
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

    def to_dict(self):
        """JSON-able copy of every field."""
        return copy.deepcopy(asdict(self))

    def rows(self):
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
        if self.micro:
            arena = self.micro["arena"]
            rows.append(("TFLM arena (est.)", f"{_kb(arena['recommended_bytes'])}  "
                         f"peak act. {arena['peak_activation_bytes']:,} B"))
            rows.append(("TFLM C array", f"{self.micro['source']} / {self.micro['header']}"
                         f"  ({self.micro['variable']})"))
        rows.append(("files", ", ".join(f"{k} ({v:,} B)" for k, v in self.files.items())))
        return rows

    def table(self):
        """Human-readable two-column text table."""
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        title = f"TFLite export -> {self.out_dir}"
        line = "-" * max(len(title), 60)
        body = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
        return f"{title}\n{line}\n{body}\n{line}"

    def __str__(self):
        return self.table()

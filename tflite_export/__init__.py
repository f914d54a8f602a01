"""Deployment of plain Keras sub-networks as TFLite / TFLM artefacts.

```python
from tflite_export import export_tflite, load_manifest
report = export_tflite(model, "out/b050", quantization="int8",
                       representative_data=x_train[:500],
                       validation_data=(x_test, y_test), labels=class_names,
                       metadata={"config": {...}, "flops": 123})
print(report.table())
```

int8 exports also list float ops left in the model (``strict_int8=True`` refuses them) and, with
tflite-micro installed (the ``micro`` extra), run in the TensorFlow Lite Micro interpreter: the
measured arena goes to ``model_data.h`` and ``manifest.json``. `quantization_aware_finetune` (the
``qat`` extra) fine-tunes a sub-network with tfmot before the int8 conversion.

TensorFlow / Keras are imported lazily (on the first conversion).
"""

from tflite_export.android import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    load_manifest,
    save_serving_model,
    verify_signature,
    write_manifest,
)
from tflite_export.checks import QUANTIZATIONS
from tflite_export.convert import configure_converter, convert_model
from tflite_export.export import export_tflite
from tflite_export.micro import (
    TFLM_BUILTIN_OPS,
    ArenaEstimate,
    c_source,
    check_micro_ops,
    estimate_arena,
    read_c_array,
)
from tflite_export.micro_run import (
    ARENA_MARGIN,
    MicroArena,
    measure_arena,
    run_micro,
    tflm_version,
    verify_micro,
)
from tflite_export.purity import check_int8_purity, int8_purity
from tflite_export.qat import QATResult, quantization_aware_finetune
from tflite_export.report import ExportReport
from tflite_export.verify import evaluate, inspect_model, list_ops, run_tflite

__all__ = [
    "export_tflite", "ExportReport", "load_manifest", "write_manifest",
    "convert_model", "configure_converter", "QUANTIZATIONS",
    "inspect_model", "list_ops", "run_tflite", "evaluate",
    "check_micro_ops", "estimate_arena", "c_source", "read_c_array",
    "ArenaEstimate", "TFLM_BUILTIN_OPS",
    "measure_arena", "verify_micro", "run_micro", "tflm_version", "MicroArena", "ARENA_MARGIN",
    "int8_purity", "check_int8_purity",
    "quantization_aware_finetune", "QATResult",
    "save_serving_model", "verify_signature",
    "SIGNATURE_KEY", "INPUT_NAME", "OUTPUT_NAME",
]

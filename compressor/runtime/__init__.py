"""The network as it is deployed: ONNX export with batch norm folded, ONNX Runtime sessions, int8.

Needs the ``deploy`` extra (``pip install -e '.[deploy]'``: onnx and onnxruntime); without it
every entry point raises :class:`~compressor.errors.MissingExtraError`, one line that says so.
Importing this package loads neither.
"""

from compressor.lazy import lazy_exports

_PUBLIC = {
    "OnnxModel": "compressor.runtime.onnx_export",
    "to_onnx": "compressor.runtime.onnx_export",
    "FoldReport": "compressor.runtime.folding",
    "fold_batch_norms": "compressor.runtime.folding",
    "OnnxRuntimeModule": "compressor.runtime.session",
    "open_session": "compressor.runtime.session",
    "quantize_int8": "compressor.runtime.int8",
    "deploy_available": "compressor.runtime.extra",
    "require_deploy": "compressor.runtime.extra",
}
__all__ = list(_PUBLIC)
__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)

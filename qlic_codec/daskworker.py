"""The Dask worker plugin that ``qlic batch`` installs on the cluster it starts for itself:
its workers are qlic's own processes, so they keep freed memory as the command line does
(``qlic_codec.allocator``), also a worker that the nanny starts again after a crash. A
cluster given by address is someone else's, and ``batch.run`` leaves it alone. Imported only
when a batch starts its own cluster (it needs the distributed extra)."""

from distributed.diagnostics.plugin import WorkerPlugin

from . import allocator


class KeepFreedMemory(WorkerPlugin):
    name = "qlic-keep-freed-memory"

    def setup(self, worker) -> None:
        allocator.keep_freed_memory()

"""SAM3 backends for OncoSeg: bundle (shared weights), loading, tiny test models, LoRA, Meta conversion, registry,
device choice. Import submodules directly (``from OncoSegLib.models.loading import load_bundle``); this package
imports nothing heavy on its own."""

"""Your model, not only ours: scenarios made from a factory, an entry point, timm or Hugging Face.

``bench.registry.get_scenario`` looks a name up among the built-ins first and then asks
``bench.foreign.resolve`` (imported only then), so every consumer of a scenario name accepts these
forms: ``dlbench run`` and its child processes, the torchrun ranks of a parallel run, ``profile``,
``gate`` workers, sweep files and ``bench.api.run``.

- ``path/to/file.py:factory`` and ``package.module:factory``: a function whose keyword parameters
  (type hint and default each) become a generated frozen config dataclass (``factory``), and which
  returns a ``bench.workload.Workload``. ``bench.api.scenario`` declares presets, a description
  and constraints on it;
- an entry point of the group ``dlbench.scenarios`` (``[project.entry-points."dlbench.scenarios"]``
  in an installed package), named by its entry-point name and listed by ``dlbench list``;
- ``timm:<model name>`` (``timm_models``) and ``hf:<model type>`` (``hf_models``): built from their
  configuration with random weights, offline, on synthetic batches.

Every one of them is finished the same way (``prepare``): built on the run's device, its repeated
blocks named or detected (``blocks``), the default optimizer added. ``names`` parses a name and
decides where a relative path resolves; ``compat`` lets timm and transformers import beside a
torchvision built for another torch.

Loading a factory runs its module's code, and the parent process builds each configuration once on
the meta device to check it (``factory.preflight``): name only files you trust.

Torch-free at import, like the registry: torch (and timm, transformers) load only when a name of
that kind is resolved.
"""

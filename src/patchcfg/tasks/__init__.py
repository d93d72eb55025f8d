"""The tasks: what a model is built for and how it is trained, scored or used, without the experiment
folder around it. :mod:`~patchcfg.tasks.finetune` (the classifier and its masked loss),
:mod:`~patchcfg.tasks.distill`, :mod:`~patchcfg.tasks.embed` (cached features) and
:mod:`~patchcfg.tasks.predict`. The stages (:mod:`patchcfg.stages`) run them inside an experiment."""

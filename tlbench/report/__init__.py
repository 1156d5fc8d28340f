"""The report files of the tools: tables, pictures and pages (from :mod:`tlbench.render`) of
loaded results (:mod:`tlbench.results`) and of the tools' own result types, written atomically."""

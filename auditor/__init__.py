"""cluster-auditor: a governance audit and rules engine for BigID cluster analysis.

The pipeline, one module each: fetch (:mod:`auditor.bigid`), store (:mod:`auditor.store`),
evaluate (:mod:`auditor.engine`), diff (:mod:`auditor.diff`), render (:mod:`auditor.render`)
and deliver (:mod:`auditor.render.email`, :mod:`auditor.formats`).
"""

__version__ = "0.1.0"

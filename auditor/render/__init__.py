"""Rendering: the HTML report and the email, through one Jinja2 environment.

* :mod:`auditor.render.env`: the environment (autoescape, ``StrictUndefined``, filters, the
  ``--templates`` override folder) and the inline assets with their Content-Security-Policy;
* :mod:`auditor.render.context`: the typed context built from the JSON outputs of check and diff;
* :mod:`auditor.render.report`: gathering from the database, rendering, exports
  (``build_report_bundle``, ``render_report``, ``write_report``);
* :mod:`auditor.render.email`: the email message and its SMTP delivery (``build_message``, ``send``,
  ``deliver_email``).
"""

from __future__ import annotations

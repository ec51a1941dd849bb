"""Jupyter server of the UI tests (Galata): a fresh root dir, iDDS home and port; runs as root.

The idds server extension is enabled by the installed idds-jupyter package; its
store (SQLite), cache and logs go to a temporary IDDS_HOME. The server is mounted
under a JupyterHub-like base URL, so every URL the extension builds is checked
to honour it.
"""

import os
import tempfile

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821 - `c` is the traitlets config of this file

c.ServerApp.allow_root = True  # noqa: F821
c.ServerApp.port = int(os.environ.get("IDDS_UI_PORT", "8788"))  # noqa: F821
c.ServerApp.ip = "127.0.0.1"  # noqa: F821
c.ServerApp.base_url = os.environ.get("IDDS_UI_BASE_URL", "/")  # noqa: F821
# A real token (galata's default is none): with authentication disabled, the kernels' idds
# client would be taken for a cookie-less browser and refused by the XSRF check. The browser
# sends the token in an Authorization header (playwright.config.js: extraHTTPHeaders).
c.IdentityProvider.token = os.environ.get("IDDS_UI_TOKEN", "idds-ui-test-token")  # noqa: F821
c.LabApp.workspaces_dir = tempfile.mkdtemp(prefix="idds-ui-workspaces-")  # noqa: F821

_home = os.environ.get("IDDS_UI_HOME") or tempfile.mkdtemp(prefix="idds-ui-")
os.environ["IDDS_HOME"] = _home
os.environ.setdefault("IDDS_WORKERS", "2")
for _var in ("IDDS_URL", "IDDS_TOKEN", "IDDS_DB_URL"):
    os.environ.pop(_var, None)
# The render-time test draws a run of 100,000 jobs in one work (the default limit is 50,000).
c.IddsExtension.max_jobs_per_work = 100_000  # noqa: F821

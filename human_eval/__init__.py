"""parley.human_eval: web app and terminal play for human-vs-agent negotiation studies.

``create_app`` builds a study's FastAPI app, ``create_server`` the app ``parley serve`` runs for one study
or several, ``StudyConfig`` describes a study,
``StudyService`` holds the game logic shared with terminal play (``parley play``), and
``write_report`` turns a study database into plots and a markdown report (``parley report``).
Names are imported lazily so ``import parley.human_eval`` does not pull in FastAPI or SQLAlchemy.
"""

from __future__ import annotations

from parley.utils import lazy_exports

_EXPORTS = {
    "create_app": "parley.human_eval.app",
    "create_server": "parley.human_eval.server",
    "StudyConfig": "parley.human_eval.config",
    "AgentSpec": "parley.human_eval.config",
    "StudyConfigError": "parley.human_eval.config",
    "DEFAULT_STUDY": "parley.human_eval.config",
    "StudyService": "parley.human_eval.service",
    "StudyError": "parley.human_eval.service",
    "make_engine": "parley.human_eval.db",
    "write_report": "parley.human_eval.report",
    "load_tables": "parley.human_eval.report",
    "mount_oracle": "parley.human_eval.oracle_page",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("parley.human_eval", _EXPORTS)

"""fsmlog: finite-state-machine workflows on an event log (AWS Lambda + Kinesis, or one embedded SQLite file).

The public surface users import: ``Action`` (base class of actions), ``load_settings`` /
``Settings`` and the root error ``FsmlogError``. Kept import-light: nothing here pulls in
boto3, rich or the engine, so ``from fsmlog import Action`` costs little in a Lambda cold start.
"""

from eventlog.errors import FsmlogError
from eventlog.settings import Settings, load_settings
from projections.actions import Action

__version__ = "0.1.0"

__all__ = ["Action", "FsmlogError", "Settings", "load_settings", "__version__"]

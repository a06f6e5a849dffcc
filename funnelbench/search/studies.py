"""Opening a study to search it (:func:`open_search_study`): create it with its settings,
baselines queued and folder claimed, or load it and refuse one with other settings; and
Optuna's logging kept to what the search has not looked at (:func:`quiet_optuna`).

The read-only opening is :func:`.readonly.read_study`.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from pathlib import Path

import optuna

from ..errors import UsageError, redact
from ..presets import resolve
from .faults import error_line
from .folders import check_folder_free, claim_folder
from .locks import storage_lock
from .pruners import make_pruner
from .samplers import make_sampler
from .settings import Settings, differences
from .storage import HEARTBEAT_S, open_search_storage, storage_file, storage_url
from .vocabulary import BASELINE_LAYOUT, MARKER


def open_search_study(
    settings: Settings,
    *,
    study_name: str,
    storage: str | None,
    out: Path,
    workers: int = 1,
    heartbeat_s: int = HEARTBEAT_S,
) -> tuple[optuna.Study, bool]:
    """Create the study or load it; (study, created). A study with other settings is refused.
    Default storage: the study folder's SQLite file, or its journal file for several workers.
    The folder ``out`` is the study's alone (:func:`.folders.claim_folder`): a study of another storage
    that has the same name is refused before it writes anything."""
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
    url = storage_url(storage, out=out.resolve(), workers=workers)
    shown = redact(url)
    new_file = storage_file(url)
    if new_file is not None and not new_file.exists():  # a new file holds no study yet: this one will be created
        check_folder_free(out, url)
    storage = open_search_storage(url, heartbeat_s)
    sampler = make_sampler(
        settings.sampler, settings.seed, len(settings.objectives), space=settings.space, budgets=settings.budgets
    )
    pruner = make_pruner(settings.pruner, settings.proxy.get("epochs", 10))
    with storage_lock(storage, study_name):  # commands started together: one creates it, the others load it
        try:
            study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
            created = False
        except KeyError:
            check_folder_free(out, url)
            study = optuna.create_study(
                study_name=study_name, storage=storage, sampler=sampler, pruner=pruner, directions=settings.directions
            )
            created = True
        except Exception as err:  # noqa: BLE001 - a bad URL or an unreachable database
            raise UsageError(f"--storage {shown}: cannot open it ({error_line(err)})") from None
        now = settings.to_attrs()
        if created:
            study.set_user_attr("funnelbench", MARKER)
            study.set_user_attr("uid", uuid.uuid4().hex)
            study.set_user_attr("settings", now)
            study.set_user_attr("out", str(out))
            for layout in settings.baselines:
                params = {}  # an extra baseline outside the space: trained by its layout alone, unseen by the sampler
                if settings.space.contains(resolve(layout)) is None:
                    params = settings.space.params_of(resolve(layout))  # only the decisions it uses
                study.enqueue_trial(params, user_attrs={BASELINE_LAYOUT: layout})
            claim_folder(out, study, url)
            return study, True
        if study.user_attrs.get("funnelbench") != MARKER:
            raise UsageError(
                f"study {study_name!r} in {shown} was not made by funnelbench search; choose another --study"
            )
        diff = differences(study.user_attrs.get("settings", {}), now)
        if diff:
            raise UsageError(
                f"study {study_name!r} exists with other settings: {'; '.join(diff)}; run it with the same "
                "options to continue it, or choose another --study"
            )
        earlier = "uid" not in study.user_attrs  # made before studies had an identity: its folder has no owner file
        if earlier:
            study.set_user_attr("uid", uuid.uuid4().hex)
        claim_folder(out, study, url, trials_are_its_own=earlier)
    return study, False


def quiet_optuna() -> None:
    """Optuna's INFO lines (one per trial) off; its warnings stay, but for the ones judged harmless
    here: a trial told twice after a kill (``skip_if_finished``) and the experimental options."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").addFilter(_HarmlessOptunaWarnings())


class _HarmlessOptunaWarnings:
    """Named Optuna warnings the search expects (each one looked at): everything else shows."""

    EXPECTED = ("was already finished",)  # Study.tell(skip_if_finished=True) on a trial a stale-trial pass ended

    def filter(self, record) -> bool:
        return not any(text in record.getMessage() for text in self.EXPECTED)


def load_search_study(settings: Settings, *, study_name: str, url: str, heartbeat_s: int = HEARTBEAT_S) -> optuna.Study:
    """A study the parent process created or checked (:func:`open_search_study`), loaded again in
    a worker process from its storage ``url``, with this process's own sampler and pruner."""
    storage = open_search_storage(url, heartbeat_s)
    sampler = make_sampler(
        settings.sampler, settings.seed, len(settings.objectives), space=settings.space, budgets=settings.budgets
    )
    pruner = make_pruner(settings.pruner, settings.proxy.get("epochs", 10))
    try:
        return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    except Exception as err:  # noqa: BLE001 - an unreachable database
        raise UsageError(f"--storage {redact(url)}: cannot open it ({error_line(err)})") from None


__all__ = ["open_search_study", "load_search_study", "quiet_optuna"]

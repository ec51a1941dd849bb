"""A run's provenance as an RO-Crate (Workflow Run Crate profile), readable without this project.

The crate (a zip, written with the ``rocrate`` library) holds:

* ``workflow.json`` — the run's template, the ``ComputationalWorkflow`` (main entity);
* ``provenance.json`` — the raw record (every job's digests, environment, links);
* one ``SoftwareApplication`` per work (its code digest as ``identifier``), one
  ``CreateAction`` for the run and one per job: ``instrument`` its work, ``object``
  its input digest and the results of the upstream jobs it read, ``result`` its
  result digest, ``startTime``/``endTime``, ``actionStatus``, and the job a cached
  result was taken from (``isBasedOn``); one ``PropertyValue`` per environment
  (Python, platform, host, package versions) that ``environment`` properties name.

Profiles: https://w3id.org/ro/wfrun/process/0.5 and https://w3id.org/ro/wfrun/workflow/0.5.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

__all__ = ["PROFILES", "write_crate"]

PROFILES = ("https://w3id.org/ro/wfrun/process/0.5", "https://w3id.org/ro/wfrun/workflow/0.5")
_STATUS = {
    "finished": "http://schema.org/CompletedActionStatus",
    "failed": "http://schema.org/FailedActionStatus",
}


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(float(t), tz=dt.UTC).isoformat()


def write_crate(run: Mapping[str, Any], record: Mapping[str, Any], path: str) -> str:
    """Write the crate of ``run`` (id, name, status, owner, created_at, finished_at,
    template) with its provenance ``record`` (as :func:`store.provenance.run_provenance`
    returns it, all jobs) to ``path`` (a ``.zip``); returns ``path``."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    crate = ROCrate()
    wid = int(run["id"])
    crate.name = f"iDDS run {wid}: {run.get('name') or ''}".strip()
    crate.description = (
        "Provenance of a workflow run of idds-jupyter: every job's code, input "
        "and result digests, environment, attempts and times."
    )
    crate.root_dataset["conformsTo"] = [{"@id": p} for p in PROFILES]
    for p in PROFILES:
        crate.add(
            ContextEntity(
                crate,
                p,
                properties={
                    "@type": "CreativeWork",
                    "name": p.rsplit("/", 2)[-2],
                    "version": p.rsplit("/", 1)[-1],
                },
            )
        )
    with tempfile.TemporaryDirectory(prefix="idds-crate-") as tmp:
        tpl = os.path.join(tmp, "workflow.json")
        with open(tpl, "w", encoding="utf-8") as fh:
            json.dump(run.get("template") or {}, fh, indent=1, sort_keys=True, default=str)
        raw = os.path.join(tmp, "provenance.json")
        with open(raw, "w", encoding="utf-8") as fh:
            json.dump(
                {"run": {k: v for k, v in run.items() if k != "template"}, **record},
                fh,
                default=str,
            )
        workflow = crate.add_workflow(
            tpl,
            dest_path="workflow.json",
            main=True,
            lang="cwl",
            properties={
                "name": run.get("name") or f"run {wid}",
                "encodingFormat": "application/json",
            },
        )
        crate.add_file(
            raw,
            dest_path="provenance.json",
            properties={"name": "raw provenance record", "encodingFormat": "application/json"},
        )

        envs: dict[str, Any] = {}
        for env_id, info in (record.get("environments") or {}).items():
            info = info or {}
            envs[env_id] = crate.add(
                ContextEntity(
                    crate,
                    f"#env-{env_id}",
                    properties={
                        "@type": "PropertyValue",
                        "name": "environment",
                        "identifier": env_id,
                        "value": json.dumps(info, sort_keys=True),
                        "description": f"Python {info.get('python')} on {info.get('host')} "
                        f"({info.get('platform')})",
                    },
                )
            )
        apps: dict[str, Any] = {}
        parents: dict[int, list[int]] = {}
        for link in record.get("links") or ():
            parents.setdefault(int(link["child"]), []).append(int(link["parent"]))
        results: dict[int, Any] = {}
        for j in record.get("jobs") or ():
            jid = int(j["job_id"])
            results[jid] = crate.add(
                ContextEntity(
                    crate,
                    f"#result-{jid}",
                    properties={
                        "@type": "PropertyValue",
                        "name": f"result of job {jid}",
                        "value": j.get("result_hash"),
                    },
                )
            )
        for j in record.get("jobs") or ():
            work = str(j["work"])
            app = apps.get(work)
            if app is None:
                app = apps[work] = crate.add(
                    ContextEntity(
                        crate,
                        f"#work-{work}",
                        properties={
                            "@type": "SoftwareApplication",
                            "name": work,
                            "identifier": j["code_hash"],
                        },
                    )
                )
                workflow.append_to("hasPart", app)
            jid = int(j["job_id"])
            inputs = [
                crate.add(
                    ContextEntity(
                        crate,
                        f"#input-{jid}",
                        properties={
                            "@type": "PropertyValue",
                            "name": "input digest",
                            "value": j["input_hash"],
                        },
                    )
                )
            ]
            for parent in parents.get(jid, ()):
                if parent not in results:  # a job of another run (not exported): named only
                    results[parent] = crate.add(
                        ContextEntity(
                            crate,
                            f"#result-{parent}",
                            properties={
                                "@type": "PropertyValue",
                                "name": f"result of job {parent}",
                            },
                        )
                    )
                inputs.append(results[parent])
            result = results[jid]
            props: dict[str, Any] = {
                "name": f"{work}[{j['idx']}]",
                "identifier": str(jid),
                "actionStatus": {
                    "@id": _STATUS.get(str(j["status"]), "http://schema.org/FailedActionStatus")
                },
                "startTime": _iso(j.get("started_at")),
                "endTime": _iso(j.get("finished_at")),
                "additionalProperty": [
                    crate.add(
                        ContextEntity(
                            crate,
                            f"#job-{jid}-{key}",
                            properties={"@type": "PropertyValue", "name": key, "value": value},
                        )
                    )
                    for key, value in (
                        ("attempts", j.get("attempts")),
                        ("backend", j.get("backend")),
                        ("cached", bool(j.get("cached"))),
                    )
                ],
            }
            if j.get("env_id") in envs:
                props["environment"] = {"@id": f"#env-{j['env_id']}"}
            if j.get("cached_from") is not None:
                props["isBasedOn"] = {"@id": f"#job-{j['cached_from']}"}
            props = {k: v for k, v in props.items() if v is not None}
            crate.add_action(
                app, identifier=f"#job-{jid}", object=inputs, result=[result], properties=props
            )
        crate.add_action(
            workflow,
            identifier=f"#run-{wid}",
            properties={
                k: v
                for k, v in {
                    "name": f"run {wid} of {run.get('name')}",
                    "actionStatus": {
                        "@id": _STATUS.get(
                            str(run.get("status")), "http://schema.org/FailedActionStatus"
                        )
                    },
                    "startTime": _iso(run.get("created_at")),
                    "endTime": _iso(run.get("finished_at")),
                    "agent": {"@id": f"#owner-{run.get('owner')}"} if run.get("owner") else None,
                }.items()
                if v is not None
            },
        )
        if run.get("owner"):
            crate.add(
                ContextEntity(
                    crate,
                    f"#owner-{run['owner']}",
                    properties={"@type": "Person", "name": run["owner"]},
                )
            )
        crate.write_zip(path)
    return path

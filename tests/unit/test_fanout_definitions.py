"""for_each, workflow steps and a workflow's output: what a definition may say, and the
precise error for each mistake (docs/workflows.md#for_each, #sub-workflows)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.errors import InvalidDefinition
from engine.definitions.model import DEFAULT_MAX_PARALLEL, WorkflowDef, parse_workflow_doc
from engine.definitions.templates import Item, render


def _doc(**steps: Any) -> dict[str, Any]:
    return {"id": "w", "name": "w", "version": "1.0.0",
            "steps": {"src": {"type": "job", "topic": "t"}, **steps}}


def _problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidDefinition) as refused:
        parse_workflow_doc(doc)
    return [(p.path, p.message) for p in refused.value.problems]


def test_a_for_each_step_round_trips_and_defaults_max_parallel() -> None:
    doc = _doc(each={"type": "job", "topic": "t", "depends_on": ["src"],
                     "for_each": "${steps.src.output.hosts}",
                     "input": {"h": "${item.name}", "i": "${item_index}"}},
               child={"type": "workflow", "workflow": "other", "version": "2.0.0",
                      "depends_on": ["each"], "for_each": "${input.list}", "max_parallel": 3})
    doc["output"] = {"all": "${steps.each.output}"}
    workflow = parse_workflow_doc(doc)
    each = workflow.steps["each"]
    assert (each.for_each, each.max_parallel) == ("${steps.src.output.hosts}",
                                                  DEFAULT_MAX_PARALLEL)
    child = workflow.steps["child"]
    assert (child.workflow, child.workflow_version, child.max_parallel) == ("other", "2.0.0", 3)
    assert WorkflowDef.from_doc(workflow.to_doc()) == workflow
    plain = parse_workflow_doc(_doc())
    assert "output" not in plain.to_doc()  # stored documents of before keep their form
    assert "for_each" not in plain.to_doc()["steps"]["src"]


@pytest.mark.parametrize(("step", "path", "message"), [
    ({"type": "job", "topic": "t", "for_each": ["a"]}, "steps.x.for_each",
     'must be one reference to a list: "${input.<path>}" or "${steps.<id>.output.<path>}", '
     "got a list"),
    ({"type": "job", "topic": "t", "for_each": "hosts: ${input.hosts}"}, "steps.x.for_each",
     "got 'hosts: ${input.hosts}'"),
    ({"type": "job", "topic": "t", "for_each": "${item}"}, "steps.x.for_each",
     "must be one reference to a list"),
    ({"type": "job", "topic": "t", "for_each": "${steps.nope.output}"}, "steps.x.for_each",
     "${steps.nope.output} refers to unknown step 'nope'"),
    ({"type": "job", "topic": "t", "for_each": "${steps.src.output}"}, "steps.x.for_each",
     "refers to step 'src', which is not an ancestor of 'x'"),
    ({"type": "job", "topic": "t", "for_each": "${input.a", }, "steps.x.for_each",
     "unterminated '${'"),
    ({"type": "notify", "for_each": "${input.a}"}, "steps.x.for_each",
     "'for_each' is only allowed on job and workflow steps; this is a step of type 'notify'"),
    ({"type": "job", "topic": "t", "max_parallel": 2}, "steps.x.max_parallel",
     "'max_parallel' is only allowed with 'for_each'"),
    ({"type": "job", "topic": "t", "for_each": "${input.a}", "max_parallel": 0},
     "steps.x.max_parallel", "must be between 1 and 5000"),
    ({"type": "job", "topic": "t", "input": {"h": "${item}"}}, "steps.x.input.h",
     "${item}: ${item} is only set in a step with 'for_each'"),
    ({"type": "job", "topic": "t", "input": {"i": "${item_index}"}}, "steps.x.input.i",
     "${item_index}: ${item_index} is only set in a step with 'for_each'"),
    ({"type": "job", "topic": "t", "input": {"h": "${item.}"}}, "steps.x.input.h",
     "malformed item reference"),
    ({"type": "workflow"}, "steps.x.workflow",
     "missing required field 'workflow' (a workflow step names the workflow its child run "
     "starts)"),
    ({"type": "workflow", "workflow": "bad id"}, "steps.x.workflow", "is not a valid id"),
    ({"type": "workflow", "workflow": "w2", "version": "latest"}, "steps.x.version",
     "is not a semantic version"),
    ({"type": "workflow", "workflow": "w2", "topic": "t"}, "steps.x.topic",
     "'topic' is only allowed on job steps; this is a step of type 'workflow'"),
    ({"type": "job", "topic": "t", "workflow": "w2"}, "steps.x.workflow",
     "'workflow' is only allowed on workflow steps; this is a step of type 'job'"),
])
def test_each_mistake_is_refused_with_its_path(step: dict[str, Any], path: str,
                                               message: str) -> None:
    problems = _problems(_doc(x=step))
    assert [p for p, _ in problems] == [path], problems
    assert message in problems[0][1]


def test_a_workflow_output_may_name_its_steps_but_not_items_or_unknown_steps() -> None:
    doc = _doc()
    doc["output"] = {"a": "${steps.src.output}", "b": "${item}", "c": "${steps.zz.output}"}
    assert _problems(doc) == [
        ("output.b", "${item}: ${item} is only set in the input of a for_each step"),
        ("output.c", "${steps.zz.output} refers to unknown step 'zz'")]


def test_item_templates_render_the_element_and_its_position() -> None:
    template = {"host": "${item.name}", "n": "${item_index}", "all": "${item}",
                "text": "host ${item.name} (#${item_index})"}
    assert render(template, run_input={}, step_outputs={},
                  item=Item({"name": "h1"}, 4)) == {
        "host": "h1", "n": 4, "all": {"name": "h1"}, "text": "host h1 (#4)"}

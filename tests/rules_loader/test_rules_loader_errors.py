"""Each kind of rule file error, with its exact message, line and column."""

from __future__ import annotations

from rules_loader_helpers import errors_of


def test_unknown_key_suggests_the_closest(tmp_path):
    text = """\
    tigger:
      stage: lapsed_member
    actions:
      tag: {add: [winback]}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:1:1: error: unknown key 'tigger' (did you mean 'trigger'?)\n    tigger:\n    ^"
    ]


def test_unknown_nested_key_is_located_on_the_key(tmp_path):
    text = """\
    trigger:
      stage: lapsed_member
    caps: {per_user: {max: 1, pre: 30d}}
    actions:
      tag: {add: [winback]}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:3:27: error: unknown key 'pre' (did you mean 'per'?)\n"
        "    caps: {per_user: {max: 1, pre: 30d}}\n"
        "                              ^",
    ]


def test_duplicate_key_names_both_lines(tmp_path):
    text = """\
    trigger:
      stage: lapsed_member
    priority: 1
    actions:
      tag: {add: [winback]}
    priority: 2
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:6:1: error: duplicate key 'priority' (first defined on line 3)\n"
        "    priority: 2\n"
        "    ^"
    ]


def test_no_stays_a_string(tmp_path):
    text = """\
    trigger:
      stage: lapsed_member
    owner: no
    description: yes
    actions:
      tag: {add: [no]}
    """
    path = tmp_path / "r.yaml"
    assert errors_of(tmp_path, text) == []
    from engine.rules import load_rule_file

    rule = load_rule_file(path)
    assert (rule.owner, rule.description, rule.actions["tag"].add) == ("no", "yes", ["no"])


def test_bad_cron_is_located_on_the_value(tmp_path):
    text = """\
    trigger:
      schedule: "0 25 * * *"
    actions:
      tag: {add: [winback]}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:2:13: error: invalid cron expression '0 25 * * *': Error validating expression "
        "'25': the last value (25) is higher than the maximum value (23) (5 fields: minute hour "
        "day-of-month month day-of-week, e.g. '0 10 * * MON')\n"
        '      schedule: "0 25 * * *"\n'
        "                ^"
    ]


def test_cron_needs_five_fields(tmp_path):
    text = """\
    trigger: {schedule: "0 10 * *"}
    actions: {tag: {add: [winback]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:1:21: error: invalid cron expression '0 10 * *': Wrong number of fields; got 4, "
        "expected 5 (5 fields: minute hour day-of-month month day-of-week, e.g. '0 10 * * MON')\n"
        '    trigger: {schedule: "0 10 * *"}\n'
        "                        ^"
    ]


def test_bad_duration(tmp_path):
    text = """\
    trigger:
      after: welcome
      wait: 3 days
    actions:
      tag: {add: [winback]}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:3:9: error: invalid duration '3 days': use a number and a unit w, d, h, m or s "
        "(for example '14d', '12h', '30m', '2w' or '1d12h')\n"
        "      wait: 3 days\n"
        "            ^"
    ]


def test_bad_holdout(tmp_path):
    text = """\
    trigger: {stage: vip}
    experiment:
      holdout: 120%
    actions: {tag: {add: [winback]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:3:12: error: holdout 120% must be at least 0% and below 100%\n"
        "      holdout: 120%\n"
        "               ^"
    ]


def test_holdout_that_is_not_a_share(tmp_path):
    text = """\
    trigger: {stage: vip}
    experiment: {holdout: ten percent}
    actions: {tag: {add: [winback]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:2:23: error: holdout 'ten percent' must be a percentage like '10%' or a fraction "
        "like 0.1\n"
        "    experiment: {holdout: ten percent}\n"
        "                          ^"
    ]


def test_unknown_action_kind(tmp_path):
    text = """\
    trigger: {stage: vip}
    actions:
      cupon: {value: 20}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:3:3: error: unknown action kind 'cupon' (did you mean 'coupon'?)\n"
        "      cupon: {value: 20}\n"
        "      ^"
    ]


def test_action_params_are_validated_by_the_kind(tmp_path):
    text = """\
    trigger: {stage: vip}
    actions:
      coupon: {value: 20, expires: 14d}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:3:23: error: unknown key 'expires' (did you mean 'expires_in'?)\n"
        "      coupon: {value: 20, expires: 14d}\n"
        "                          ^"
    ]


def test_variant_override_of_an_unknown_action(tmp_path):
    text = """\
    trigger: {stage: vip}
    experiment:
      variants:
        standard: {weight: 1}
        bigger: {weight: 1, cupon: {value: 30}}
    actions:
      coupon: {value: 20}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:5:25: error: variant 'bigger' overrides 'cupon', which is not an action of this "
        "rule (did you mean 'coupon'?)\n"
        "        bigger: {weight: 1, cupon: {value: 30}}\n"
        "                            ^"
    ]


def test_variant_override_of_an_action_the_rule_lacks(tmp_path):
    text = """\
    trigger: {stage: vip}
    experiment:
      variants:
        mail: {email: {creative: winback}}
    actions:
      coupon: {value: 20}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:4:12: error: variant 'mail' overrides action 'email', which the rule does not "
        "have; add it under 'actions'\n"
        "        mail: {email: {creative: winback}}\n"
        "               ^"
    ]


def test_merged_variant_is_validated_at_the_override(tmp_path):
    text = """\
    trigger: {stage: vip}
    experiment:
      variants:
        bigger:
          coupon: {value: -30}
    actions:
      coupon: {value: 20}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:5:23: error: experiment.variants.bigger.coupon.value: input should be greater "
        "than 0\n"
        "          coupon: {value: -30}\n"
        "                          ^"
    ]


def test_id_must_equal_the_file_stem(tmp_path):
    text = """\
    id: winback
    trigger: {stage: vip}
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text, name="win-back.yaml") == [
        "win-back.yaml:1:5: error: id 'winback' must equal the file name 'win-back' (the id is "
        "the file name)\n"
        "    id: winback\n"
        "        ^"
    ]


def test_colon_in_a_plain_value_is_a_located_parse_error(tmp_path):
    text = """\
    trigger: {stage: vip}
    when: note: vip
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:2:11: error: invalid YAML: mapping values are not allowed here (put quotes "
        "around a value that contains ': ')\n"
        "    when: note: vip\n"
        "              ^"
    ]


def test_tab_indentation_is_a_located_parse_error(tmp_path):
    text = "trigger:\n\tstage: vip\nactions: {tag: {add: [vip]}}\n"
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    assert errors_of(tmp_path, text) == [
        "r.yaml:2:1: error: invalid YAML: found character '\\t' that cannot start any token "
        "(indent with spaces, not tabs)\n"
        "    \tstage: vip\n"
        "    ^"
    ]


def test_bad_indentation_is_a_located_parse_error(tmp_path):
    text = """\
    trigger:
      stage: vip
     when: total_spent > 1
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:3:2: error: invalid YAML: this line's indentation does not line up with the "
        "lines above\n"
        "     when: total_spent > 1\n"
        "     ^"
    ]


def test_flight_end_before_start(tmp_path):
    text = """\
    trigger: {stage: vip}
    flight: {start: 2026-11-30, end: 2026-11-01}
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:2:34: error: flight end 2026-11-01 is before its start 2026-11-30\n"
        "    flight: {start: 2026-11-30, end: 2026-11-01}\n"
        "                                     ^"
    ]


def test_flight_of_one_day_is_fine(tmp_path):
    text = """\
    trigger: {stage: vip}
    flight: {start: 2026-11-11, end: 2026-11-11}
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == []


def test_unknown_stage_suggests_a_stage(tmp_path):
    text = """\
    trigger: {stage: lapsed}
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:1:18: error: unknown stage 'lapsed' (did you mean 'lapsed_member'?)\n"
        "    trigger: {stage: lapsed}\n"
        "                     ^"
    ]


def test_trigger_needs_exactly_one_kind(tmp_path):
    text = """\
    trigger:
      stage: vip
      event: purchase
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:1:1: error: a trigger needs exactly one of stage, event, schedule, after "
        "(got stage, event)\n"
        "    trigger:\n"
        "    ^"
    ]


def test_where_needs_an_event_trigger(tmp_path):
    text = """\
    trigger:
      stage: vip
      where: event.amount > 100
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:3:10: error: 'where' filters the events of an `event` trigger; add "
        "'event: ...'\n"
        "      where: event.amount > 100\n"
        "             ^"
    ]


def test_once_and_every_exclude_each_other(tmp_path):
    text = """\
    trigger: {stage: vip}
    once: per_user
    every: 30d
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:3:8: error: 'every' and 'once' exclude each other; keep one\n"
        "    every: 30d\n"
        "           ^"
    ]


def test_status_suggests_the_closest_value(tmp_path):
    text = """\
    status: activ
    trigger: {stage: vip}
    actions: {tag: {add: [vip]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:1:9: error: status must be one of 'active', 'shadow' or 'paused', not 'activ' "
        "(did you mean 'active'?)\n"
        "    status: activ\n"
        "            ^"
    ]


def test_missing_trigger_and_empty_action(tmp_path):
    text = """\
    description: nothing else
    actions:
      email:
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:1:1: error: missing required key 'trigger'\n    description: nothing else\n    ^",
        "r.yaml:3:3: error: actions.email is empty; it needs a mapping of keys (key: value)\n"
        "      email:\n"
        "      ^",
    ]


def test_all_errors_of_a_file_are_reported_in_file_order(tmp_path):
    text = """\
    status: activ
    trigger: {stage: lapsed}
    priority: high
    actions: {cupon: {value: 1}}
    """
    assert [line.split("\n")[0] for line in errors_of(tmp_path, text)] == [
        "r.yaml:1:9: error: status must be one of 'active', 'shadow' or 'paused', not 'activ' "
        "(did you mean 'active'?)",
        "r.yaml:2:18: error: unknown stage 'lapsed' (did you mean 'lapsed_member'?)",
        "r.yaml:3:11: error: priority: input should be a valid integer",
        "r.yaml:4:11: error: unknown action kind 'cupon' (did you mean 'coupon'?)",
    ]


def test_empty_file_and_list_file(tmp_path):
    assert errors_of(tmp_path, "# nothing yet\n") == [
        "r.yaml:1:1: error: the file is empty; a rule needs at least 'trigger' and 'actions'\n"
        "    # nothing yet\n"
        "    ^"
    ]
    assert errors_of(tmp_path, "- a\n- b\n") == [
        "r.yaml:1:1: error: a rule file is a mapping of keys (trigger:, when:, actions:...), "
        "not a list or a value\n"
        "    - a\n"
        "    ^"
    ]


def test_file_name_must_be_a_valid_id(tmp_path):
    lines = errors_of(
        tmp_path, "trigger: {stage: vip}\nactions: {tag: {add: [a]}}\n", "Win Back.yaml"
    )
    assert lines == [
        "Win Back.yaml:1:1: error: the file name 'Win Back' is the rule id: use lowercase "
        "letters and digits joined by '-' or '_' (for example winback-gold.yaml)\n"
        "    trigger: {stage: vip}\n"
        "    ^"
    ]


def test_a_date_where_text_is_expected_says_to_quote_it(tmp_path):
    text = """\
    description: 2026-11-11
    trigger: {stage: vip}
    actions: {tag: {add: [a]}}
    """
    assert errors_of(tmp_path, text) == [
        "r.yaml:1:14: error: description must be text, not 2026-11-11 (put it in quotes)\n"
        "    description: 2026-11-11\n"
        "                 ^"
    ]

"""Rule files: YAML -> validated models, located errors, segments and the JSON Schema.

result = load_rules(settings.rules_dir)   # never raises for a bad file
for diagnostic in result.diagnostics:
    print(diagnostic.render())
rule = result.rules["winback-lapsed-members"]
"""

from engine.rules.loader import LoadResult, load_rule_file, load_rules, rule_files
from engine.rules.located_text import LocatedText
from engine.rules.models import Rule, RuleFile, Trigger

__all__ = [
    "LoadResult",
    "LocatedText",
    "Rule",
    "RuleFile",
    "Trigger",
    "load_rule_file",
    "load_rules",
    "rule_files",
]

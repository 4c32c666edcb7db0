"""The skill host: loads skills from entry points and runs their handlers with the capabilities they declared.

Skills themselves import only the plugin API, `assistant.skills`. Modules:
`runtime` (SkillRuntime: handlers run isolated, within a time budget), `loader` (entry-point
discovery, settings validation, LoadProblem), `sandbox` (the audit hook and permission checks),
`scheduler` (announcements that fire later), `context` (HandlerContext, TurnOutput), `llm`
(SkillLLM, SpokenStream: `ctx.llm`), `home` (Home and its sinks: `ctx.home`).
"""

"""The skill host: loads skills from entry points and runs their handlers with the capabilities they declared.

Skills themselves import only the plugin API, `assistant.skills`.
"""

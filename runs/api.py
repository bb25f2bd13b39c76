from ninja import NinjaAPI

api = NinjaAPI(title="ScriptHut API", urls_namespace="api")

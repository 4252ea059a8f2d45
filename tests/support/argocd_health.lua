-- Run an Argo CD health check as Argo CD runs a custom one: the object in the global `obj`, and
-- only the base, table and package libraries open (no string library, so no string methods).
-- usage: lua5.1 argocd_health.lua HEALTH_LUA OBJECT_LUA
--   OBJECT_LUA is a chunk returning the object as a table; prints "STATUS<TAB>MESSAGE".
local check = assert(loadfile(arg[1]))
local object = assert(loadfile(arg[2]))()

local env = {}
for name, value in pairs(_G) do
  if type(value) ~= "table" then
    env[name] = value  -- the base library's functions, and package's require and module
  end
end
env.table, env.package, env._G, env.obj = table, package, env, object
setfenv(check, env)
getmetatable("").__index = nil

local ok, health = pcall(check)
if not ok then
  io.stderr:write(tostring(health), "\n")
  os.exit(1)
end
if type(health) ~= "table" then
  io.stderr:write("health check returned ", type(health), ", not a table\n")
  os.exit(1)
end
io.write(tostring(health.status), "\t", tostring(health.message), "\n")

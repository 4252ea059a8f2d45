-- Argo CD health check for ec2.instanceprofiles.dev/InstanceProfileBinding and
-- ec2.instanceprofiles.dev/InstanceProfileBindingSet (the same conditions, the same meaning).
--
-- Written for Argo CD's Lua VM (gopher-lua, Lua 5.1), where a custom check gets only the base,
-- table and package libraries: no string.* calls and no ("..."):method() calls.
--   Healthy     Ready is True for the object's current generation
--   Degraded    Stalled is True: the operator cannot make progress (its message says why)
--   Progressing no status yet, the status is about an older generation, or Reconciling is True
local what = "binding"
if obj.kind == "InstanceProfileBindingSet" then
  what = "set"
end
local health = {status = "Progressing", message = "Waiting for the operator to reconcile the " .. what}

local function find(conditions, kind)
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function behind(observed, generation)
  return observed ~= nil and generation ~= nil and observed < generation
end

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  return health
end
if behind(status.observedGeneration, generation) then
  health.message = "Waiting for the operator to observe generation " .. generation
  return health
end

local conditions = status.conditions
local stalled = find(conditions, "Stalled")
local reconciling = find(conditions, "Reconciling")
local ready = find(conditions, "Ready")
if stalled ~= nil and stalled.status == "True" then
  health.status = "Degraded"
  health.message = stalled.message or stalled.reason or "Stalled"
  return health
end
if reconciling ~= nil and reconciling.status == "True" then
  health.message = reconciling.message or reconciling.reason or "Reconciling"
  return health
end
if ready ~= nil and ready.status == "True" and not behind(ready.observedGeneration, generation) then
  health.status = "Healthy"
  health.message = ready.message or ""
  return health
end
if ready ~= nil and ready.message ~= nil then
  health.message = ready.message
end
return health

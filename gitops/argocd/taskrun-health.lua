-- Argo CD health of a sesame.dev TaskRun. Install it in argocd-cm as
--   resource.customizations.health.sesame.dev_TaskRun: |
--     <this file>
-- Healthy: the task succeeded. Degraded: it failed, or it can never start as written (the
-- operator's Stalled condition), or a pod Sesame did not make holds its name. Progressing:
-- waiting for the operator, for a Secret or data key that may still be synced (External Secrets,
-- a later sync wave), for its pod to start, or running.
local hs = {status = "Progressing", message = "waiting for the Sesame operator"}
if obj.status == nil then
  return hs
end

local function condition(kind)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local stalled = condition("Stalled")
hs.message = obj.status.message or hs.message

if obj.status.phase == "Succeeded" then
  hs.status = "Healthy"
elseif obj.status.phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
elseif obj.status.reason == "PodNameTaken" then
  hs.status = "Degraded"
end
return hs

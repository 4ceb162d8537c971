-- Argo CD health of a sesame.dev TaskRun. Install it in argocd-cm as
--   resource.customizations.health.sesame.dev_TaskRun: |
--     <this file>
-- Healthy: the task succeeded. Degraded: it failed, or it can never start as written (an invalid
-- request, a template that references Secrets itself, a pod name taken). Progressing: waiting for
-- the operator, for a Secret or data key that may still be synced (External Secrets, a later
-- sync wave), for its pod to start, or running.
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

local may_still_arrive = {SecretNotFound = true, KeyNotFound = true}
local phase = obj.status.phase
local secrets = condition("SecretsReady")
local pod = condition("PodCreated")
hs.message = obj.status.message or hs.message

if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif secrets ~= nil and secrets.status == "False" and not may_still_arrive[secrets.reason] then
  hs.status = "Degraded"
elseif secrets ~= nil and secrets.status == "True" and pod ~= nil and pod.status == "False" then
  hs.status = "Degraded"
end
return hs

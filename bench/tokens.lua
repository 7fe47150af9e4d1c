-- wrk script: each request carries the next user token from a file (one per line), so the gate's
-- token and decision caches see every user in turn. Requests are built once, in init, so the
-- load generator spends no more per request than with a fixed header.
local requests = {}
local index = 0

function init(args)
  for token in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("GET", nil, { ["x-whop-user-token"] = token })
  end
  index = math.random(#requests) - 1
end

function request()
  index = index % #requests + 1
  return requests[index]
end

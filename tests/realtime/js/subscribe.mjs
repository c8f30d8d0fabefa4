// supabase-js against the hub, as a front end uses it: a private channel, every
// broadcast printed as one JSON line on stdout, then optionally a client broadcast with
// ack. Arguments: base URL, anon key, user token, topic, "send" | "listen".
import { createClient } from '@supabase/supabase-js'

const [base, anonKey, token, topic, mode] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const supabase = createClient(base, anonKey, {
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { params: { log_level: 'error' } },
})
await supabase.realtime.setAuth(token)
const channel = supabase.channel(topic, {
  config: { private: true, broadcast: { ack: mode === 'send', self: false } },
})
channel.on('broadcast', { event: '*' }, (message) => out({ kind: 'broadcast', message }))
channel.on('system', {}, (payload) => out({ kind: 'system', payload }))
channel.subscribe(async (status, err) => {
  out({ kind: 'status', status, error: err ? String(err.message ?? err) : null, vsn: supabase.realtime.vsn ?? null })
  if (status === 'SUBSCRIBED' && mode === 'send') {
    const result = await channel.send({ type: 'broadcast', event: 'message', payload: { body: 'spoof' } })
    out({ kind: 'send', result })
  }
  if (status !== 'SUBSCRIBED') {
    setTimeout(() => process.exit(0), 200)
  }
})
setTimeout(() => process.exit(0), Number(process.env.SBJS_SECONDS ?? 15) * 1000)

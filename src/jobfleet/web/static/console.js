/* The console's behaviour: calls to the JSON API (session cookie + CSRF header) and
   the live event stream of a job. No build step, no external asset.
   The pages hold no inline script: a control names its action in data-on-click,
   data-on-submit, data-on-change or data-on-input, and one listener per event type
   on document calls that action from jf.actions with the element and the event; an
   action that returns false cancels the event's default (a form's submit), as an
   inline handler's "return false" did. */
var jf = (function () {
  function meta(name) { var m = document.querySelector('meta[name="' + name + '"]'); return m ? m.content : ''; }
  function api(name, body) {
    return fetch('/api/bk-job/prod/api/v3/' + name, {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': meta('csrf-token')},
      body: JSON.stringify(body)
    }).then(function (r) { return r.json(); });
  }
  function scope() { return {bk_scope_type: 'biz', bk_scope_id: meta('biz')}; }
  function ipList(text) {
    return text.split(/[\s,;]+/).filter(Boolean).map(function (ip) {
      var p = ip.split(':'); return p.length === 2 ? {bk_cloud_id: +p[0], ip: p[1]} : {bk_cloud_id: 0, ip: ip};
    });
  }
  // a terminal's control sequences (colours, cursor moves, window titles): the log pane
  // shows text, and these would show as stray characters like [1;31m
  var ESCAPES = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
  function b64(text) { return btoa(unescape(encodeURIComponent(text))); }
  function done(form, answer) {
    if (answer.result && answer.data && answer.data.job_instance_id) {
      location.href = '/api_execute/' + answer.data.job_instance_id; return;
    }
    form.querySelector('#result').textContent = answer.message || 'failed';
  }
  function rolling(value) {
    if (!value) return undefined;
    return {expression: value, mode: 1};
  }
  var self = {
    // shared with the catalog's pages (catalog.js)
    api: api, meta: meta, scope: scope, b64: b64,
    countIps: function (area) {
      document.getElementById('ipcount').textContent = ipList(area.value).length + ' IP';
    },
    targetServer: function (form) {
      var server = {}, ips = ipList(form.elements.ips.value);
      var nodes = [], groups = [];
      form.querySelectorAll('input.topo:checked').forEach(function (el) { nodes.push({id: +el.value, node_type: el.dataset.type}); });
      form.querySelectorAll('input.dgroup:checked').forEach(function (el) { groups.push({id: el.value}); });
      if (ips.length) server.ip_list = ips;
      if (nodes.length) server.topo_node_list = nodes;
      if (groups.length) server.dynamic_group_list = groups;
      return server;
    },
    countTimer: null, countAsked: 0,
    targetsChanged: function () {
      clearTimeout(self.countTimer);
      self.countTimer = setTimeout(self.countTargets, 300);
    },
    countTargets: function () {
      var box = document.getElementById('targets'), out = document.getElementById('target-count');
      var server = self.targetServer(box.closest('form')), asked = ++self.countAsked;
      if (!Object.keys(server).length) { out.textContent = ''; out.dataset.total = ''; return; }
      var body = scope(); body.target_server = server;
      fetch('/api/jobfleet/v1/targets/count', {
        method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': meta('csrf-token')},
        body: JSON.stringify(body)
      }).then(function (r) { return r.json(); }).then(function (a) {
        if (asked !== self.countAsked) return;
        if (!a.result) { out.textContent = a.message; out.className = 'small bad'; out.dataset.total = 'error'; return; }
        var d = a.data, words = self.words;
        out.className = 'small';
        out.dataset.total = d.total; out.dataset.alive = d.alive; out.dataset.dead = d.dead;
        out.textContent = d.total + ' ' + (words.hosts || 'hosts') + ' · ' + (words.alive || 'alive') + ' ' + d.alive + ' · ' + (words.dead || 'dead') + ' ' + d.dead;
        out.title = d.dead_sample.join(' ');
      });
    },
    words: {},
    dangerShown: function (findings) {
      var box = document.getElementById('danger'), list = document.getElementById('danger-lines');
      list.innerHTML = '';
      var blocked = false;
      findings.forEach(function (f) {
        var li = document.createElement('li');
        li.className = 'danger-line' + (f.action === 2 ? ' bad' : '');
        li.dataset.line = f.line;
        li.textContent = (f.action === 2 ? '⛔ ' : '⚠ ') + f.line + ': ' + f.line_content + (f.description ? ' (' + f.description + ')' : '');
        list.appendChild(li);
        if (f.action === 2) blocked = true;
      });
      box.hidden = !findings.length;
      box.dataset.blocked = blocked ? '1' : '0';
      document.getElementById('danger-confirm-row').hidden = blocked || !findings.length;
      return blocked;
    },
    scriptChanged: function () {
      var c = document.getElementById('danger-confirm'); if (c) c.checked = false;
    },
    execute: function (form) {
      var f = form.elements, body = scope(), result = form.querySelector('#result');
      // said here, as the CLI says it: the API would name its own field (content)
      if (!f.script.value.trim()) { result.textContent = self.words.empty; return false; }
      body.task_name = f.task_name.value; body.script_language = +f.script_language.value;
      body.script_content = b64(f.script.value); body.timeout = +f.timeout.value;
      body.account_alias = f.account_alias.value;
      if (f.script_param.value) { body.script_param = b64(f.script_param.value); body.is_param_sensitive = f.is_param_sensitive.checked ? 1 : 0; }
      body.target_server = self.targetServer(form);
      var r = rolling(f.rolling.value); if (r) body.rolling_config = r;
      var check = scope(); check.script_language = body.script_language; check.content = body.script_content;
      result.textContent = '';
      api('check_script', check).then(function (c) {
        if (!c.result) { result.textContent = c.message; return; }
        var findings = c.data || [];
        if (self.dangerShown(findings)) { result.textContent = self.words.blocked || 'A dangerous statement blocks this script'; return; }
        if (findings.length && !document.getElementById('danger-confirm').checked) {
          result.textContent = self.words.confirm || 'Dangerous statements found: tick the box to run it anyway'; return;
        }
        api('fast_execute_script', body).then(function (a) { done(form, a); });
      });
      return false;
    },
    distribute: function (form) {
      var f = form.elements, file = f.file.files[0];
      fetch('/api/jobfleet/v1/files?bk_scope_type=biz&bk_scope_id=' + meta('biz') + '&name=' + encodeURIComponent(file.name), {
        method: 'POST', credentials: 'same-origin', body: file,
        headers: {'X-CSRF-Token': meta('csrf-token'), 'Content-Type': 'application/octet-stream'}
      }).then(function (r) { return r.json(); }).then(function (up) {
        if (!up.result) { form.querySelector('#result').textContent = up.message; return; }
        var body = scope();
        body.task_name = f.task_name.value; body.file_target_path = f.file_target_path.value;
        body.account_alias = f.account_alias.value;
        if (f.download_speed_limit.value) body.download_speed_limit = +f.download_speed_limit.value;
        body.file_source_list = [{file_list: [up.data.path], file_type: 2}];
        body.target_server = self.targetServer(form);
        api('fast_transfer_file', body).then(function (a) { done(form, a); });
      });
      return false;
    },
    runPlan: function (form) {
      var body = scope(); body.job_plan_id = +form.dataset.plan; body.global_var_list = [];
      // the page never holds a password's value nor a host variable's hosts: a box
      // left empty keeps the plan's own
      form.querySelectorAll('.var').forEach(function (el) {
        if (el.dataset.hosts) {
          var ips = ipList(el.value);
          if (ips.length) body.global_var_list.push({name: el.dataset.name, server: {ip_list: ips}});
        } else if (el.type !== 'password' || el.value) {
          body.global_var_list.push({name: el.dataset.name, value: el.value});
        }
      });
      api('execute_job_plan', body).then(function (a) { done(form, a); });
      return false;
    },
    job: function () { return document.getElementById('job').dataset; },
    operated: function (a) {
      document.getElementById('op-result').textContent = a.result ? 'OK' : a.message;
      // a retry runs an ended job again: its stream had ended with it
      if (a.result && document.getElementById('job-status').dataset.ended) self.watchJob(true);
    },
    jobOp: function (code) {
      var d = self.job(), body = {bk_scope_type: d.scopeType, bk_scope_id: d.scopeId, job_instance_id: +d.job, operation_code: code};
      api('operate_job_instance', body).then(self.operated);
    },
    stepOp: function (code) {
      var d = self.job(), body = {bk_scope_type: d.scopeType, bk_scope_id: d.scopeId, job_instance_id: +d.job, step_instance_id: +d.step, operation_code: code};
      api('operate_step_instance', body).then(self.operated);
    },
    copyText: function (text) {
      if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text); }
      var area = document.createElement('textarea'); area.value = text; area.id = 'copied';
      document.body.appendChild(area); area.select(); try { document.execCommand('copy'); } catch (e) {}
      setTimeout(function () { area.remove(); }, 2000);
    },
    copyGroup: function (index) {
      var d = self.job();
      fetch('/console/jobs/' + d.job + '/steps/' + d.step + '/output-groups/' + index + '/ips', {credentials: 'same-origin'})
        .then(function (r) { return r.text(); }).then(self.copyText);
    },
    copyIps: function (status) {
      var d = self.job();
      fetch('/console/jobs/' + d.job + '/steps/' + d.step + '/ips?status=' + status, {credentials: 'same-origin'})
        .then(function (r) { return r.text(); }).then(self.copyText);
    },
    runNames: {}, logText: '', logSource: null, term: '', logPending: '', logTimer: null,
    // output comes in many events: it is appended to the page at most ten times a
    // second, and only what is new (a log of megabytes drawn again for each event
    // kept the page busy for a minute)
    addLog: function (text) {
      self.logText += text; self.logPending += text;
      if (self.logTimer) return;
      self.logTimer = setTimeout(function () {
        var pre = document.getElementById('log'), text = self.logPending;
        self.logTimer = null; self.logPending = '';
        if (self.searched()) { self.render(); return; }
        // the log follows new output only when the operator is at its end: one who
        // scrolled back to read stays where they are
        var end = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        pre.appendChild(document.createTextNode(text));
        if (end) pre.scrollTop = pre.scrollHeight;
      }, 100);
    },
    // the term in the search box, which may be one the browser restored on back,
    // forward or reload after the page's script had started
    searched: function () {
      var box = document.getElementById('log-search');
      self.term = box ? box.value : self.term;
      return self.term;
    },
    render: function () {
      var pre = document.getElementById('log'), term = self.searched();
      if (!term) { pre.textContent = self.logText; }
      else {
        pre.innerHTML = '';
        self.logText.split('\n').forEach(function (line) {
          if (line.indexOf(term) < 0) return;
          var i = line.indexOf(term), row = document.createElement('div');
          row.appendChild(document.createTextNode(line.slice(0, i)));
          var m = document.createElement('mark'); m.textContent = term; row.appendChild(m);
          row.appendChild(document.createTextNode(line.slice(i + term.length)));
          pre.appendChild(row);
        });
      }
      pre.scrollTop = pre.scrollHeight;
    },
    search: function (term) { self.term = term; self.render(); },
    showLog: function (host, ip) {
      var d = self.job();
      document.getElementById('log-host').textContent = ip;
      if (self.logSource) self.logSource.close();
      clearTimeout(self.logTimer); self.logTimer = null;
      self.logText = ''; self.logPending = ''; self.render();
      var src = new EventSource('/api/jobfleet/v1/jobs/' + d.job + '/events?hosts=' + host);
      self.logSource = src;
      src.addEventListener('output', function (e) {
        var ev = JSON.parse(e.data);
        if (ev.step_instance_id === +d.step) self.addLog(ev.content.replace(ESCAPES, ''));
      });
      src.addEventListener('end', function () { src.close(); });
    },
    // the steps, host groups and rows as the page's own address renders them now (with
    // the operator's filter and page), at most once a second: the status events carry
    // counts only, a status no host had when the page was made has no place yet, and a
    // step's duration is only known from the store
    hostsAsked: 0, hostsTimer: null, hostsAgain: false,
    refreshHosts: function () {
      // asked while a read is under way: read once more after it, so the last one is fresh
      if (self.hostsTimer) { self.hostsAgain = true; return; }
      var wait = Math.max(0, self.hostsAsked + 1000 - Date.now());
      self.hostsTimer = setTimeout(function () {
        self.hostsAsked = Date.now();
        fetch(location.href, {credentials: 'same-origin'}).then(function (r) {
          return r.ok ? r.text() : '';
        }).then(function (html) {
          var fresh = new DOMParser().parseFromString(html, 'text/html');
          // a keyboard user keeps their place: the focused host row (or the group's
          // control) is focused again in the new rows
          var had = document.activeElement, row = had && had.closest('tr.host, li.group');
          var place = row && (row.dataset.ip ? 'tr.host[data-ip="' + CSS.escape(row.dataset.ip) + '"] a'
            : 'li.group [data-status="' + CSS.escape(had.dataset.status || '') + '"]');
          ['steps', 'groups', 'hosts-title', 'hosts'].forEach(function (id) {
            var now = document.getElementById(id), made = fresh.getElementById(id);
            if (now && made) now.replaceWith(document.adoptNode(made));
          });
          var again = place && document.querySelector(place);
          if (again && !document.contains(had)) again.focus();
        }).catch(function () {}).then(function () {
          self.hostsTimer = null;
          if (self.hostsAgain) { self.hostsAgain = false; self.refreshHosts(); }
        });
      }, wait);
    },
    watchJob: function (again) {
      var d = self.job(), note = document.getElementById('live-note');
      delete document.getElementById('job-status').dataset.ended;
      delete document.getElementById('job-status').dataset.stalled; note.hidden = true;
      var first = document.querySelector('tr.host');
      if (first && !again) first.click();
      var src = new EventSource('/api/jobfleet/v1/jobs/' + d.job + '/events');
      var seen = 0;
      src.addEventListener('status', function (e) {
        var ev = JSON.parse(e.data), st = document.getElementById('job-status');
        st.className = 'st st' + ev.status; st.dataset.status = ev.status;
        st.textContent = self.runNames[ev.status] || ev.status;
        ev.steps.forEach(function (s) {
          var cell = document.getElementById('step-status-' + s.step_instance_id);
          if (cell) { cell.className = 'st st' + s.status; cell.textContent = self.runNames[s.status] || s.status; }
          if (s.step_instance_id !== +d.step) return;
          s.groups.forEach(function (g) {
            var b = document.querySelector('.count[data-status="' + g.status + '"]');
            if (b) b.textContent = g.count;
          });
        });
        if (seen++) { htmx.trigger(document.body, 'refresh-groups'); self.refreshHosts(); }
      });
      src.addEventListener('error', function () {
        // the browser reconnects a dropped stream by itself; it gives up only when the
        // server refuses it (the session ended): the page is no longer live and says so
        if (src.readyState !== EventSource.CLOSED) return;
        document.getElementById('job-status').dataset.stalled = '1';
        note.textContent = self.words.stalled || 'The live view stopped: log in again to follow this job';
        note.hidden = false;
      });
      src.addEventListener('end', function (e) {
        src.close(); document.getElementById('job-status').dataset.ended = '1';
        htmx.trigger(document.body, 'refresh-groups');
        // a job that had ended when the page was made is shown as it ended already
        if (again || seen > 1 || d.finished !== '1') self.refreshHosts();
      });
    }
  };
  return self;
})();

/* htmx: nothing in the pages uses hx-on, js: values or event filters, so htmx never
   needs eval (refused by the policy), and a swapped-in <script> is never run */
if (window.htmx) { htmx.config.allowEval = false; htmx.config.allowScriptTags = false; }

jf.actions = {
  // base.html
  'choose-biz': function (el) {
    document.cookie = 'jobfleet_biz=' + el.value + ';path=/;samesite=lax'; el.form.submit();
  },
  'reload': function () { location.reload(); },
  // _targets.html, execute.html, files.html, plan.html
  'count-ips': function (el) { jf.countIps(el); jf.targetsChanged(); },
  'targets-changed': function () { jf.targetsChanged(); },
  'script-changed': function () { jf.scriptChanged(); },
  'execute': function (el) { return jf.execute(el); },
  'distribute': function (el) { return jf.distribute(el); },
  'run-plan': function (el) { return jf.runPlan(el); },
  // job.html, output_groups.html
  'job-op': function (el) { jf.jobOp(+el.dataset.code); },
  'step-op': function (el) { jf.stepOp(+el.dataset.code); },
  'copy-ips': function (el) { jf.copyIps(+el.dataset.status); },
  'copy-group': function (el) { jf.copyGroup(+el.dataset.index); },
  'show-log': function (el) { jf.showLog(+el.dataset.host, el.dataset.ip); return false; },
  'search-log': function (el) { jf.search(el.value); },
  // catalog.js: scripts, templates, plans, crons
  'create-script': function (el) { return jfc.createScript(el); },
  'save-tags': function (el) { return jfc.saveTags(el); },
  'publish': function (el) { jfc.publish(+el.dataset.version); },
  'disable-version': function (el) { jfc.disable(+el.dataset.version); },
  'save-draft': function (el) { return jfc.saveDraft(el); },
  'new-version': function (el) { return jfc.newVersion(el); },
  'import-template': function (el) { return jfc.importTemplate(el); },
  'sync-plan': function (el) { jfc.syncPlan(+el.dataset.plan); },
  'cron-status': function (el) { jfc.cronStatus(+el.dataset.cron, +el.dataset.status); },
  'delete-cron': function (el) { if (confirm(el.dataset.confirm)) jfc.deleteCron(+el.dataset.cron); },
  'create-cron': function (el) { return jfc.createCron(el); },
  // admin.js: hosts, accounts, dangerous rules, notifications
  'revoke': function (el) { jfa.revoke(el); },
  'edit-account': function (el) { jfa.editAccount(el); },
  'delete-account': function (el) { jfa.deleteAccount(el); },
  'save-account': function (el) { return jfa.saveAccount(el); },
  'account-category': function (el) { jfa.category(el); },
  'edit-rule': function (el) { jfa.editRule(el); },
  'rule-op': function (el) { jfa.ruleOp(el, el.dataset.op); },
  'save-rule': function (el) { return jfa.saveRule(el); },
  'try-script': function (el) { return jfa.tryScript(el); },
  'edit-notify': function (el) { jfa.editNotify(el); },
  'delete-notify': function (el) { jfa.deleteNotify(el); },
  'test-notify': function (el) { jfa.testNotify(el); },
  'save-notify': function (el) { return jfa.saveNotify(el); }
};

['click', 'submit', 'change', 'input'].forEach(function (type) {
  var attr = 'data-on-' + type;
  document.addEventListener(type, function (event) {
    var el = event.target.closest && event.target.closest('[' + attr + ']');
    if (!el) return;
    var action = Object.prototype.hasOwnProperty.call(jf.actions, el.getAttribute(attr)) ? jf.actions[el.getAttribute(attr)] : null;
    if (!action) { event.preventDefault(); throw new Error('no console action ' + el.getAttribute(attr)); }
    if (action(el, event) === false) event.preventDefault();
  });
});

document.addEventListener('DOMContentLoaded', function () {
  var data = document.getElementById('jf-data');
  if (data) { var d = JSON.parse(data.textContent); jf.runNames = d.runNames; jf.words = d.words; }
  var job = document.getElementById('job');
  if (job && job.dataset.watch) jf.watchJob();
});

/* The administration pages' behaviour: every change is a JSON API call with the session
   cookie and the CSRF token, so the API validates, authorizes and audits it. */
var jfa = (function () {
  function meta(name) { var m = document.querySelector('meta[name="' + name + '"]'); return m ? m.content : ''; }
  function call(method, path, body) {
    var init = {method: method, credentials: 'same-origin',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': meta('csrf-token')}};
    if (body !== undefined) init.body = JSON.stringify(body);
    return fetch(path, init).then(function (r) { return r.json(); })
      .catch(function (e) { return {result: false, message: String(e)}; });
  }
  function v3(name, body) {
    body.bk_scope_type = 'biz'; body.bk_scope_id = meta('biz');
    return call('POST', '/api/bk-job/prod/api/v3/' + name, body);
  }
  function biz() { return '/api/jobfleet/v1/businesses/' + encodeURIComponent(meta('biz')); }
  function say(text, bad) {
    var out = document.getElementById('result');
    out.textContent = text; out.className = bad ? 'error' : 'ok';
  }
  /* an answer that worked reloads the page; one that did not says why */
  function reload(answer) {
    if (answer.result) { location.reload(); return; }
    say(answer.message || 'failed', true);
  }
  function b64(text) { return btoa(unescape(encodeURIComponent(text))); }
  function value(form, name) { var el = form.elements[name]; return el ? el.value.trim() : ''; }
  var self = {
    /* hosts --------------------------------------------------------------------------- */
    revoke: function (button) {
      if (!window.confirm(button.dataset.confirm)) return;
      call('DELETE', '/api/jobfleet/v1/agents/' + encodeURIComponent(button.dataset.agent))
        .then(reload);
    },
    /* accounts ------------------------------------------------------------------------ */
    category: function (select) {
      var db = select.value === select.dataset.db;
      document.querySelectorAll('.db-only').forEach(function (el) { el.hidden = !db; });
      document.querySelectorAll('.system-only').forEach(function (el) { el.hidden = db; });
    },
    saveAccount: function (form) {
      var id = value(form, 'id'), body = {};
      ['alias', 'description'].forEach(function (k) { if (value(form, k)) body[k] = value(form, k); });
      var password = form.elements.password.value;
      if (id) {
        body.id = +id; if (password) body.password = password;
        v3('update_account', body).then(reload); return false;
      }
      body.account = value(form, 'account'); body.category = +value(form, 'category');
      if (body.category === +form.elements.category.dataset.db) {
        body.type = +value(form, 'db_type'); body.db_password = password;
        body.db_system_account_id = +value(form, 'db_system_account_id');
        body.db_host = value(form, 'db_host');
        if (value(form, 'db_port')) body.db_port = +value(form, 'db_port');
        if (value(form, 'db_name')) body.db_name = value(form, 'db_name');
      } else {
        body.type = +value(form, 'type'); if (password) body.password = password;
      }
      v3('create_account', body).then(reload);
      return false;
    },
    editAccount: function (button) {
      var d = button.dataset, form = document.getElementById('account-form');
      form.elements.id.value = d.id; form.elements.account.value = d.account;
      form.elements.alias.value = d.alias; form.elements.description.value = d.description;
      form.elements.account.disabled = true; form.elements.category.disabled = true;
      document.querySelectorAll('.create-only').forEach(function (el) { el.hidden = true; });
      form.scrollIntoView();
    },
    deleteAccount: function (button) {
      if (!window.confirm(button.dataset.confirm)) return;
      v3('delete_account', {id: +button.dataset.id}).then(reload);
    },
    /* dangerous-statement rules ------------------------------------------------------- */
    languages: function (form) {
      var found = [];
      form.querySelectorAll('input[name=lang]:checked').forEach(function (el) { found.push(+el.value); });
      return found;
    },
    saveRule: function (form) {
      var id = value(form, 'id');
      var body = {expression: form.elements.expression.value, action: +value(form, 'action'),
                  script_language_list: self.languages(form), description: value(form, 'description')};
      if (id) body.id = +id;
      v3(id ? 'update_dangerous_rule' : 'create_dangerous_rule', body).then(reload);
      return false;
    },
    editRule: function (button) {
      var d = button.dataset, form = document.getElementById('rule-form'), langs = JSON.parse(d.languages);
      form.elements.id.value = d.id; form.elements.expression.value = d.expression;
      form.elements.action.value = d.action; form.elements.description.value = d.description;
      form.querySelectorAll('input[name=lang]').forEach(function (el) { el.checked = langs.indexOf(+el.value) >= 0; });
      form.scrollIntoView();
    },
    ruleOp: function (button, name) {
      if (name === 'delete_dangerous_rule' && !window.confirm(button.dataset.confirm)) return;
      v3(name, {id: +button.dataset.id}).then(reload);
    },
    tryScript: function (form) {
      var out = document.getElementById('findings'), words = form.dataset;
      call('POST', '/api/jobfleet/v1/dangerous-rules/check',
           {script_language: +value(form, 'script_language'), content: b64(form.elements.script.value)})
        .then(function (a) {
          out.innerHTML = '';
          var verdict = document.getElementById('verdict');
          if (!a.result) { verdict.textContent = a.message; verdict.className = 'error'; return; }
          verdict.dataset.blocked = a.data.blocked ? '1' : '0';
          verdict.textContent = a.data.blocked ? words.blocked : (a.data.findings.length ? words.warned : words.clean);
          verdict.className = a.data.blocked ? 'bad' : 'ok';
          a.data.findings.forEach(function (f) {
            var row = document.createElement('tr'); row.className = 'finding';
            [f.line, f.line_content, f.timed_out ? words.timedOut : f.match_content, f.action === 2 ? words.block : words.warn, f.description]
              .forEach(function (v) { var td = document.createElement('td'); td.textContent = v; row.appendChild(td); });
            out.appendChild(row);
          });
        });
      return false;
    },
    /* notifications ------------------------------------------------------------------- */
    saveNotify: function (form) {
      var id = value(form, 'id'), statuses = [];
      form.querySelectorAll('input[name=status]:checked').forEach(function (el) { statuses.push(+el.value); });
      var body = {target: value(form, 'target'), statuses: statuses, enabled: form.elements.enabled.checked};
      if (form.elements.secret.value) body.secret = form.elements.secret.value;
      if (id) { call('PUT', biz() + '/notify-configs/' + id, body).then(reload); return false; }
      body.channel = value(form, 'channel');
      call('POST', biz() + '/notify-configs', body).then(reload);
      return false;
    },
    editNotify: function (button) {
      var d = button.dataset, form = document.getElementById('notify-form'), statuses = JSON.parse(d.statuses);
      form.elements.id.value = d.id; form.elements.channel.value = d.channel;
      form.elements.channel.disabled = true; form.elements.target.value = d.target;
      form.elements.enabled.checked = d.enabled === '1';
      form.querySelectorAll('input[name=status]').forEach(function (el) { el.checked = statuses.indexOf(+el.value) >= 0; });
      form.scrollIntoView();
    },
    deleteNotify: function (button) {
      if (!window.confirm(button.dataset.confirm)) return;
      call('DELETE', biz() + '/notify-configs/' + button.dataset.id).then(reload);
    },
    testNotify: function (button) {
      var cell = document.getElementById('test-' + button.dataset.id), tries = 0;
      cell.textContent = '…';
      call('POST', biz() + '/notify-configs/' + button.dataset.id + '/tests').then(function (a) {
        if (!a.result) { cell.textContent = a.message; cell.classList.add('error'); return; }
        var path = biz() + '/notify-configs/' + button.dataset.id + '/tests/' + a.data.delivery_id;
        (function poll() {
          call('GET', path).then(function (s) {
            var state = s.result ? s.data.state : 'failed';
            cell.dataset.state = state;
            cell.textContent = (button.dataset[state] || state) + (s.result && s.data.last_error ? ': ' + s.data.last_error : '');
            cell.classList.toggle('ok', state === 'done'); cell.classList.toggle('error', state === 'failed');
            if (state === 'pending' && ++tries < 60) setTimeout(poll, 1000);
          });
        })();
      });
    }
  };
  return self;
})();

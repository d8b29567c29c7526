/* The catalog's pages (scripts, templates and plans, crons): every change is a call to
   the JSON API with the session cookie and the CSRF token (console.js's jf.api). */
var jfc = (function () {
  function say(answer) {
    var out = document.getElementById('result');
    if (out) out.textContent = answer.message || 'failed';
    return false;
  }
  function then(go) {
    return function (answer) { return answer.result ? go(answer.data) : say(answer); };
  }
  function reload() { location.reload(); }
  function own(path, method, body) {
    return fetch('/api/jobfleet/v1' + path, {
      method: method, credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': jf.meta('csrf-token')},
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) { return r.json(); });
  }
  function tagList(text) { return text.split(',').map(function (t) { return t.trim(); }).filter(Boolean); }
  function scriptBox() { return document.getElementById('script').dataset; }
  function scriptApi(name, body) {
    var d = scriptBox(), pub = d.public === '1';
    var call = pub ? name.replace('script', 'public_script') : name;
    var full = pub ? body : Object.assign(jf.scope(), body);
    full.script_id = d.script;
    return jf.api(call, full);
  }
  return {
    // scripts ------------------------------------------------------------------
    createScript: function (form) {
      var f = form.elements, pub = form.dataset.public === '1';
      var body = pub ? {} : jf.scope();
      body.name = f.name.value; body.script_language = +f.script_language.value;
      body.version = f.version.value; body.content = jf.b64(f.content.value);
      body.tags = tagList(f.tags.value);
      jf.api(pub ? 'create_public_script' : 'create_script', body).then(then(function (d) {
        location.href = (pub ? '/public-scripts/' : '/scripts/') + encodeURIComponent(d.script_id);
      }));
      return false;
    },
    saveDraft: function (form) {
      var f = form.elements;
      scriptApi('update_script_version', {script_version_id: +form.dataset.version,
        content: jf.b64(f.content.value), version_desc: f.version_desc.value})
        .then(then(reload));
      return false;
    },
    newVersion: function (form) {
      var f = form.elements;
      scriptApi('create_script_version', {version: f.version.value,
        content: jf.b64(f.content.value), version_desc: f.version_desc.value})
        .then(then(function (d) { location.search = '?version=' + d.id; }));
      return false;
    },
    saveTags: function (form) {
      scriptApi('update_script_basic', {tags: tagList(form.elements.tags.value)}).then(then(reload));
      return false;
    },
    publish: function (id) { scriptApi('publish_script_version', {script_version_id: id}).then(then(reload)); },
    disable: function (id) { scriptApi('disable_script_version', {script_version_id: id}).then(then(reload)); },
    // templates and plans ----------------------------------------------------------
    importTemplate: function (form) {
      var f = form.elements, file = f.file.files[0];
      var query = 'bk_scope_type=biz&bk_scope_id=' + jf.meta('biz');
      if (f.name.value) query += '&name=' + encodeURIComponent(f.name.value);
      if (f.update.checked) query += '&update=true';
      file.text().then(function (text) {
        return fetch('/api/jobfleet/v1/templates/import?' + query, {
          method: 'POST', credentials: 'same-origin', body: text,
          headers: {'Content-Type': 'application/yaml', 'X-CSRF-Token': jf.meta('csrf-token')}
        });
      }).then(function (r) { return r.json(); }).then(then(function (d) {
        location.href = '/templates/' + d.template.id;
      }));
      return false;
    },
    syncPlan: function (id) {
      own('/plans/' + id + '/sync', 'POST', jf.scope()).then(then(reload));
    },
    // crons ------------------------------------------------------------------------
    createCron: function (form) {
      var f = form.elements, body = jf.scope();
      body.name = f.name.value; body.job_plan_id = +f.job_plan_id.value;
      body.expression = f.expression.value;
      jf.api('save_cron', body).then(then(function (d) {
        var go = function () { location.href = '/crons/' + d.id; };
        if (!f.enabled.checked) return go();
        jf.api('update_cron_status', Object.assign(jf.scope(), {id: d.id, status: 1})).then(then(go));
      }));
      return false;
    },
    cronStatus: function (id, status) {
      jf.api('update_cron_status', Object.assign(jf.scope(), {id: id, status: status})).then(then(reload));
    },
    deleteCron: function (id) {
      jf.api('delete_cron', Object.assign(jf.scope(), {id: id})).then(then(function () {
        location.href = '/crons';
      }));
    }
  };
})();

"""The console's words in English and Simplified Chinese, chosen by cookie or browser."""

from __future__ import annotations

LANG_COOKIE = "jobfleet_lang"
LANGS = ("en", "zh")

ZH: dict[str, str] = {
    "Log in": "登录",
    "Log out": "退出",
    "Username": "用户名",
    "Password": "密码",
    "Home": "首页",
    "Quick execute": "快速执行",
    "File distribution": "文件分发",
    "Job history": "执行历史",
    "Plans": "执行方案",
    "Hosts": "主机",
    "Audit log": "审计日志",
    "Business": "业务",
    "Running jobs": "正在执行",
    "Recent failures": "最近失败",
    "Agents alive": "在线 Agent",
    "Name": "名称",
    "Status": "状态",
    "Operator": "执行人",
    "Started": "开始时间",
    "Duration": "耗时",
    "Script": "脚本",
    "Language": "脚本语言",
    "Parameters": "脚本参数",
    "Sensitive parameters": "敏感参数",
    "Account": "执行账号",
    "Timeout (s)": "超时时间(秒)",
    "Target IPs (one per line)": "目标 IP(每行一个)",
    "Rolling batch size": "滚动批次大小",
    "Execute": "执行",
    "Steps": "步骤",
    "Hosts by status": "按状态分组",
    "Hosts by output": "按输出分组",
    "Terminate": "终止作业",
    "Retry failed": "失败 IP 重做",
    "Retry all": "全部重试",
    "Ignore error": "忽略错误",
    "Confirm": "确认继续",
    "Skip": "跳过",
    "Next batch": "下一批次",
    "Copy IPs": "复制 IP",
    "Search the log": "搜索日志",
    "Log": "日志",
    "hosts": "台主机",
    "Upload a file": "上传文件",
    "Target path": "目标路径",
    "Speed limit (MB/s)": "限速(MB/s)",
    "Distribute": "分发",
    "Run plan": "执行方案",
    "Variables": "全局变量",
    "Filter": "筛选",
    "Previous": "上一页",
    "Next": "下一页",
    "Wrong username or password": "用户名或密码错误",
    "Outliers first": "少数派优先",
    "No jobs": "暂无作业",
    "Alive": "在线",
    "Dead": "离线",
    "Last seen": "最后在线",
    "Version": "版本",
    "Time": "时间",
    "Action": "操作",
    "Resource": "资源",
}


def pick(cookie: str | None, accept: str) -> str:
    if cookie in LANGS:
        return str(cookie)
    for part in accept.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"


def translator(lang: str) -> dict[str, str]:
    return ZH if lang == "zh" else {}

"""The console's words in English and Simplified Chinese, chosen by cookie or browser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    "Waiting for your confirmation": "待我确认",
    "Targets": "目标服务器",
    "Topology": "业务拓扑",
    "Dynamic groups": "动态分组",
    "Dangerous statements": "高危语句",
    "Run it anyway": "仍然执行",
    "alive": "正常",
    "dead": "异常",
    "A dangerous statement blocks this script": "脚本包含被拦截的高危语句,不能执行",
    "Dangerous statements found: tick the box to run it anyway": "检测到高危语句:勾选后仍可执行",
    "No variables": "无变量",
    "Value": "值",
    "Type": "类型",
    "Step": "步骤",
    "Approvers": "确认人",
}


# the words the page script shows, by its key
SCRIPT_WORDS = {
    "hosts": "hosts",
    "alive": "alive",
    "dead": "dead",
    "blocked": "A dangerous statement blocks this script",
    "confirm": "Dangerous statements found: tick the box to run it anyway",
}


# the administration pages: hosts, accounts, dangerous-statement rules, notifications
ZH.update(
    {
        "Accounts": "账号管理",
        "Dangerous-statement rules": "高危语句规则",
        "Notifications": "消息通知",
        "Topology": "业务拓扑",
        "All hosts": "全部主机",
        "All": "全部",
        "No sets": "暂无集群",
        "Dynamic groups": "动态分组",
        "No dynamic groups": "暂无动态分组",
        "Members of": "分组成员:",
        "IP or host name": "IP 或主机名",
        "label key=value": "标签 key=value",
        "Cloud area": "管控区域",
        "Host name": "主机名",
        "Agent": "Agent 状态",
        "Labels": "标签",
        "Not installed": "未安装",
        "Revoke": "吊销",
        "Revoked": "已吊销",
        "Revoke the agent of": "吊销此主机的 Agent:",
        "It can no longer connect until it enrolls again.": "吊销后它将无法连接,直到重新注册。",
        "No hosts": "暂无主机",
        "Account": "账号",
        "Alias": "别名",
        "Category": "用途",
        "Type": "类型",
        "Database": "数据库",
        "Description": "描述",
        "Modified by": "更新人",
        "System account": "系统账号",
        "Database account": "数据库账号",
        "Edit": "编辑",
        "Delete": "删除",
        "Delete the account": "删除账号",
        "No accounts": "暂无账号",
        "Create or edit an account": "新建或编辑账号",
        "Runs as (system account)": "依赖的系统账号",
        "Database host": "数据库地址",
        "Port": "端口",
        "Database name": "数据库名",
        "unchanged when empty": "留空则不修改",
        "Save": "保存",
        "Cancel": "取消",
        "Expression": "语法检测表达式",
        "Languages": "脚本类型",
        "Block": "拦截",
        "Warn": "扫描告警",
        "Enabled": "已启用",
        "Disabled": "已停用",
        "Enable": "启用",
        "Disable": "停用",
        "Delete rule": "删除规则",
        "No rules": "暂无规则",
        "Add or edit a rule": "新增或编辑规则",
        "Only administrators change the rules.": "只有管理员可以修改规则。",
        "Try it": "试一试",
        "Check": "检测",
        "Line": "行号",
        "Content": "内容",
        "Match": "匹配",
        "This script would be blocked": "该脚本将被拦截",
        "This script would run with a warning": "该脚本可以执行,但有告警",
        "No rule matches": "没有命中任何规则",
        "A channel hears when a job of this business ends in one of its statuses.": (
            "作业以所选状态结束时,通知渠道会收到消息。"
        ),
        "Channel": "渠道",
        "Target": "接收方",
        "Events": "通知事件",
        "Signed": "已签名",
        "Test": "测试",
        "Send a test message": "发送测试消息",
        "Sending": "发送中",
        "Delivered": "已送达",
        "Not delivered": "未送达",
        "Delete channel": "删除通知渠道",
        "No notification channels": "暂无通知渠道",
        "Add or edit a channel": "新增或编辑通知渠道",
        "Webhook signing key": "Webhook 签名密钥",
    }
)


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


# status names as bk-job's console shows them (RunStatusEnum, ExecuteObjectTaskStatusEnum)
RUN_STATUS_ZH: dict[int, str] = {
    1: "等待执行",
    2: "正在执行",
    3: "执行成功",
    4: "执行失败",
    5: "跳过",
    6: "忽略错误",
    7: "等待用户",
    8: "手动结束",
    9: "状态异常",
    10: "强制终止中",
    11: "强制终止成功",
    13: "确认终止",
    14: "被丢弃",
    15: "滚动等待",
}
HOST_STATUS_ZH: dict[int, str] = {
    0: "未知错误",
    1: "Agent 异常",
    2: "无效主机",
    3: "上次已成功",
    5: "等待执行",
    7: "正在执行",
    9: "执行成功",
    11: "执行失败",
    12: "任务下发失败",
    13: "任务超时",
    15: "任务日志错误",
    16: "GSE 脚本日志超时",
    17: "GSE 文件日志超时",
    18: "Agent 未安装",
    101: "脚本执行失败",
    102: "脚本执行超时",
    103: "脚本执行被终止",
    104: "脚本返回码非零",
    202: "文件传输失败",
    203: "源文件不存在",
    301: "文件任务系统错误",
    303: "文件任务超时",
    310: "Agent 异常",
    311: "用户名不存在",
    312: "用户密码错误",
    320: "文件获取失败",
    321: "文件超出限制",
    329: "文件传输错误",
    399: "任务执行出错",
    403: "任务强制终止成功",
    404: "任务强制终止失败",
    500: "未知状态",
}


def status_namer(lang: str, names: dict[int, str], zh: dict[int, str]) -> Callable[[Any], str]:
    """A status number's name in ``lang``: Chinese from ``zh``, else the enum's name."""
    table = zh if lang == "zh" else names

    def name(value: Any) -> str:
        try:
            number = int(value)
        except (TypeError, ValueError):
            return str(value)
        return table.get(number) or names.get(number) or str(number)

    return name

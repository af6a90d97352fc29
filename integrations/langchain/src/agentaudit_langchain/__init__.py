"""agentaudit for LangChain: one callback records each agent invocation as an audit run.

```python
import agentaudit as aa
from agentaudit_langchain import AuditCallbackHandler

handler = AuditCallbackHandler(aa.Auditor(aa.SQLiteStore("agentaudit.db")))
agent.invoke({"messages": [...]}, config={"callbacks": [handler]})
```
"""

from ._handler import AuditCallbackHandler

__all__ = ["AuditCallbackHandler"]
__version__ = "0.1.0"
